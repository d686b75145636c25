"""Shared helpers for the distillation tests, and the worker that tests/test_distill_distributed.py launches.

Run as `python -m torch.distributed.run --nproc_per_node 2 tests/distill_worker.py OUT_DIR`: each rank distills a few
steps on the CPU (gloo) and saves its student weights to OUT_DIR/rank<R>.pt.
"""

from __future__ import annotations

import os
import sys

import torch
from datasets import Dataset

sys.path.insert(0, os.path.dirname(__file__))
from tiny_models import tiny_model  # noqa: E402


def token_dataset(n: int = 8, seq_len: int = 16, seed: int = 0, ragged: bool = False) -> Dataset:
    """Blocks of random tokens with input_ids / attention_mask / labels; `ragged` pads and masks some rows."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    if ragged:
        for row in range(n):
            pad = int(torch.randint(0, seq_len // 2, (1,), generator=g))
            if pad:
                ids[row, -pad:], mask[row, -pad:], labels[row, -pad:] = 0, 0, -100
            labels[row, : int(torch.randint(0, 4, (1,), generator=g))] = -100  # e.g. an unscored prompt
    return Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": mask.tolist(), "labels": labels.tolist()}
    )


def tiny_args(output_dir, **overrides):
    """DistillationArguments for fast CPU tests."""
    from hf_minitron import DistillationArguments

    defaults = dict(
        output_dir=str(output_dir),
        max_steps=3,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    return DistillationArguments(**{**defaults, **overrides})


def teacher_and_student(**student_overrides):
    return tiny_model("llama", seed=1), tiny_model("llama", seed=2, **student_overrides)


def distill_run(output_dir, world_size: int = 1, **overrides):
    """Distill a width-changed student (hidden 32 vs 64: a learned projection) on one global batch of 4 rows per step.

    Returns the student's and the projection's weights; the data order is sequential so that one process with
    batch 4 and two processes with batch 2 see the same global batches.
    """
    from hf_minitron import DistillationTrainer

    teacher, student = teacher_and_student(num_hidden_layers=2, hidden_size=32)
    args = tiny_args(
        output_dir, ddp_backend="gloo" if world_size > 1 else None, max_steps=3,
        lm_weight=0.5, per_device_train_batch_size=4 // world_size, train_sampling_strategy="sequential",
        **{"hidden_state_weight": "auto", **overrides},
    )  # fmt: skip
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(16, ragged=True)
    )
    trainer.train()
    weights = {k: v.detach().clone() for k, v in student.state_dict().items()}
    weights.update(
        {f"projection.{k}": v.detach().clone() for k, v in trainer.projection.state_dict().items()}
    )
    return weights


def main(out_dir: str) -> None:
    from safetensors.torch import save_file

    weights = distill_run(out_dir, world_size=int(os.environ["WORLD_SIZE"]))
    save_file(
        {k: v.contiguous() for k, v in weights.items()},
        os.path.join(out_dir, f"rank{os.environ['RANK']}.safetensors"),
    )


if __name__ == "__main__":
    main(sys.argv[1])
