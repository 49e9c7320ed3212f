"""Training tasks: each wraps a model and returns {"loss", "logits", "losses"} for one batch."""

from .base import Task
from .segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {"segmentation": SegmentationTask}
