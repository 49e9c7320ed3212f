"""Training tasks: each is an objective over a model (`forward(batch) -> {"loss", "logits", "losses"}`)
with its datasets and evaluations (tasks/base.py); the trainer runs them all the same way.

Adding a task: a file with `class MyTask(Task)` (and its config section, if any, as a dataclass beside
it, plus a field in run_config.Config), and one line here.
"""

from .base import Task, TaskContext
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

__all__ = ["TASKS", "Task", "TaskContext"]
