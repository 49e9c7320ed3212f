"""Training tasks: each wraps a model and returns {"loss", "logits", "losses"} for one batch."""

from .base import Task
from .distill import DistillTask
from .elite import ELiTeStudentTask, ELiTeTeacherTask
from .multivit import MultiViTCameraTask, MultiViTJointTask
from .segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {
    "segmentation": SegmentationTask,
    "distill": DistillTask,
    "multivit_camera": MultiViTCameraTask,
    "multivit_joint": MultiViTJointTask,
    "elite_teacher": ELiTeTeacherTask,
    "elite_student": ELiTeStudentTask,
}
