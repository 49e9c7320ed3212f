"""Training tasks: each wraps a model and returns {"loss", "logits", "losses"} for one batch."""

from .base import Task
from .distill import DistillTask
from .segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {"segmentation": SegmentationTask, "distill": DistillTask}
