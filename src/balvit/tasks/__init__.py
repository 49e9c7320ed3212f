"""Training tasks: each wraps a model and returns {"loss", "logits", "losses"} for one batch."""

from .base import Task
from .elite import ELiTeStudentTask, ELiTeTeacherTask
from .segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {
    "segmentation": SegmentationTask,
    "elite_teacher": ELiTeTeacherTask,
    "elite_student": ELiTeStudentTask,
}
