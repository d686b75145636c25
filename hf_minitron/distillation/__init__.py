"""Knowledge distillation from the unpruned teacher: arguments, trainer, losses, teacher correction."""

from __future__ import annotations

from .arguments import DistillationArguments
from .correction import correct_teacher
from .trainer import DistillationTrainer

__all__ = ["DistillationArguments", "DistillationTrainer", "correct_teacher"]
