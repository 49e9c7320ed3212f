"""Training tasks: each wraps a model and returns {"loss", "logits", "losses"} for one batch."""

from .segmentation import SegmentationTask

TASKS = {"segmentation": SegmentationTask}
