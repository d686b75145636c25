"""What DistillationTrainer writes besides the student: the learned projection's checkpoint file and the training
arguments as JSON (no pickle: Trainer's `training_args.bin` holds `hub_token`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from safetensors.torch import load_file, save_file
from torch import nn

from hf_minitron.io import atomic_file, atomic_write_text

from . import modeling as M
from .placement import PROJECTION_MODULE

PROJECTION_NAME = "distill_projection.safetensors"
TRAINING_ARGS_JSON = "training_args.json"


def save_projection(projection: nn.Module, folder: str) -> None:
    """The projection's weights as `folder/distill_projection.safetensors` (save_pretrained skips the module)."""
    state = {k: v.detach().cpu().contiguous() for k, v in projection.state_dict().items()}
    with atomic_file(os.path.join(folder, PROJECTION_NAME)) as tmp:
        save_file(state, tmp)


def load_projection(projection: nn.Module, folder: str) -> None:
    """Restore the projection from `folder` when the file is there (copied onto the projection's device)."""
    path = os.path.join(folder, PROJECTION_NAME)
    if os.path.isfile(path):
        projection.load_state_dict(load_file(path))


def write_training_args_json(args, folder: str) -> None:
    """`folder/training_args.json`, tokens masked and absolute paths cut to their last component (it is uploaded)."""
    from hf_minitron.hub import public_text

    atomic_write_text(os.path.join(folder, TRAINING_ARGS_JSON), public_text(args.to_json_string()))


@contextlib.contextmanager
def projection_detached(student: nn.Module, active: bool) -> Iterator[None]:
    """The student without its projection submodule inside the block when `active` (a student sharded at load
    time: transformers' (5.24) distributed save wrote it into the checkpoint despite `_keys_to_ignore_on_save`)."""
    base = M.base_model(student)
    if not active or PROJECTION_MODULE not in base._modules:
        yield
        return
    module = base._modules.pop(PROJECTION_MODULE)
    try:
        yield
    finally:
        base._modules[PROJECTION_MODULE] = module
