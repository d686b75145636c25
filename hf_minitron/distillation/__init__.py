"""Knowledge distillation from the unpruned teacher: arguments, trainer, losses, offline teacher logits, correction."""

from __future__ import annotations

from .arguments import DistillationArguments
from .correction import correct_teacher
from .offline import TeacherLogitsArguments, TeacherLogitsDataset, compute_teacher_logits
from .trainer import DistillationTrainer

__all__ = [
    "DistillationArguments",
    "DistillationTrainer",
    "TeacherLogitsArguments",
    "TeacherLogitsDataset",
    "compute_teacher_logits",
    "correct_teacher",
]
