"""Distillation cost on this CPU, paired in one process: student forward + backward in fp32 vs bf16 autocast, with
the teacher online vs stored (offline top-k) teacher logits, plus the one-off cost of the store and of an AdamW step.

Usage: python benchmarks/real_models/speed.py STUDENT_DIR [--rounds 2] (a pruned Qwen student from
bench_real_models). The settings are measured in turn, `--rounds` times, on the same training blocks after a short
warm-up each; reported as wall and process CPU seconds (all threads) per 1,000 tokens, with the loss (the settings
must compute nearly the same thing). Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import bench_real_models as B  # noqa: E402


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn) -> tuple[float, float, float]:
    """(wall s, CPU s, value) of one call."""
    t0, c0 = time.perf_counter(), cpu_s()
    value = fn()
    return time.perf_counter() - t0, cpu_s() - c0, value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    from transformers import AutoTokenizer, default_data_collator

    from hf_minitron import DistillationTrainer
    from hf_minitron.distillation.offline import (
        TeacherLogitsArguments,
        TeacherLogitsDataset,
        compute_teacher_logits,
    )

    tokenizer = AutoTokenizer.from_pretrained(B.hf_path(B.TEACHER))
    _, _, train_docs = B.split_documents(B.documents())
    blocks = B.blocks_from(train_docs, tokenizer, opts.seq_len, opts.batch, 2000)
    tokens = blocks.numel()
    results = {"tokens_per_call": tokens, "threads": opts.threads}
    with tempfile.TemporaryDirectory() as workdir:
        teacher = B.load(B.TEACHER)
        ds = B.train_dataset(blocks)
        wall, cpu, store = timed(
            lambda: compute_teacher_logits(
                teacher,
                ds,
                Path(workdir) / "store",
                TeacherLogitsArguments(top_k=opts.top_k, batch_size=opts.batch),
                progress=False,
            )
        )
        results["teacher_store"] = {
            "top_k": opts.top_k,
            "wall_s_per_1k_tokens": round(1000 * wall / tokens, 2),
            "cpu_s_per_1k_tokens": round(1000 * cpu / tokens, 2),
        }
        B.log(results["teacher_store"])
        student = B.load(opts.student, dtype=torch.float32)
        student.train()
        args = B.distill_args(str(Path(workdir) / "t"), max_steps=1, batch=opts.batch, lr=3e-5, warmup=0)
        online = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=ds,
            data_collator=default_data_collator,
        )
        stored = TeacherLogitsDataset(store)
        offline = DistillationTrainer(
            model=student, args=args, train_dataset=stored, data_collator=default_data_collator
        )
        batch_online = default_data_collator([ds[i] for i in range(len(ds))])
        batch_online = {k: torch.as_tensor(v) for k, v in batch_online.items()}
        batch_offline = default_data_collator([stored[i] for i in range(len(stored))])

        def step(trainer, batch, bf16):
            ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
            with ctx:
                loss = trainer.compute_loss(student, dict(batch))
            loss.backward()
            student.zero_grad(set_to_none=True)
            return float(loss)

        settings = {
            "online fp32": (online, batch_online, False),
            "online bf16 autocast": (online, batch_online, True),
            "offline fp32": (offline, batch_offline, False),
            "offline bf16 autocast": (offline, batch_offline, True),
        }
        short = {k: v[:, :32] if v.ndim >= 2 else v for k, v in batch_online.items()}
        for trainer, batch, bf16 in settings.values():  # warm-up (oneDNN kernels, allocator)
            step(trainer, short if trainer is online else {k: v[:, :31] if k.startswith("teacher") else v[:, :32] for k, v in batch.items()}, bf16)  # fmt: skip
        runs = {name: [] for name in settings}
        for _ in range(opts.rounds):
            for name, (trainer, batch, bf16) in settings.items():
                wall, cpu, loss = timed(lambda: step(trainer, batch, bf16))  # noqa: B023
                runs[name].append({"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "loss": round(loss, 4)})
                B.log(name, runs[name][-1])
        for name, rs in runs.items():
            results[name] = {
                "wall_s_per_1k_tokens": round(1000 * min(r["wall_s"] for r in rs) / tokens, 2),
                "cpu_s_per_1k_tokens": round(1000 * min(r["cpu_s"] for r in rs) / tokens, 2),
                "runs": rs,
            }
        optimizer = torch.optim.AdamW(student.parameters(), lr=3e-5)
        for p in student.parameters():
            p.grad = torch.zeros_like(p)
        optimizer.step()  # allocates the moments
        wall, cpu, _ = timed(optimizer.step)
        results["adamw_step"] = {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2)}
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
