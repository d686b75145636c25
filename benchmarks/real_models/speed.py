"""Distillation cost per step on this CPU, paired in one process: fp32 vs bf16 autocast, online teacher vs stored
(offline) teacher logits, sequence length at equal tokens per step.

Usage: python benchmarks/real_models/speed.py STUDENT_DIR [--steps 3] (a pruned Qwen student from bench_real_models).
Each setting runs `--warmup` + `--steps` optimizer steps of DistillationTrainer on the same training blocks; the
timed steps are reported as wall and process CPU seconds (all threads) per 1,000 tokens, with the first loss (to
check that the settings compute the same thing). Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
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


def run(student_dir, teacher, train, seq_len, batch, bf16, steps, warmup, workdir, tag) -> dict:
    from transformers import TrainerCallback, default_data_collator

    from hf_minitron import DistillationTrainer

    marks = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            marks.append(("begin", time.perf_counter(), cpu_s()))

        def on_step_end(self, args, state, control, **kw):
            marks.append(("end", time.perf_counter(), cpu_s()))

    student = B.load(student_dir, dtype=torch.float32)
    args = B.distill_args(
        str(Path(workdir) / tag), max_steps=warmup + steps, batch=batch, lr=3e-5, warmup=0, bf16=bf16
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train,
        data_collator=default_data_collator,
        callbacks=[Clock()],
    )
    trainer.train()
    timed = [(b, e) for b, e in zip(marks[0::2], marks[1::2])][warmup:]
    wall = sum(e[1] - b[1] for b, e in timed)
    cpu = sum(e[2] - b[2] for b, e in timed)
    tokens = steps * batch * seq_len
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    del trainer, student
    return {
        "setting": tag,
        "seq_len": seq_len,
        "batch": batch,
        "bf16_autocast": bf16,
        "teacher": "offline store" if teacher is None else "online",
        "wall_s_per_1k_tokens": round(1000 * wall / tokens, 2),
        "cpu_s_per_1k_tokens": round(1000 * cpu / tokens, 2),
        "first_losses": [round(x, 4) for x in losses[:2]],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tokens-per-step", type=int, default=512)
    parser.add_argument("--top-k", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    from transformers import AutoTokenizer

    from hf_minitron.distillation.offline import (
        TeacherLogitsArguments,
        TeacherLogitsDataset,
        compute_teacher_logits,
    )

    tokenizer = AutoTokenizer.from_pretrained(B.hf_path(B.TEACHER))
    _, _, train_docs = B.split_documents(B.documents())
    n_steps = opts.warmup + opts.steps
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        teacher = B.load(B.TEACHER)
        data = {}
        for seq_len in (128, 256, 512):
            blocks = B.blocks_from(
                train_docs, tokenizer, seq_len, n_steps * opts.tokens_per_step // seq_len, 2000
            )
            data[seq_len] = B.train_dataset(blocks)
        # the stored teacher: its one-off cost per 1,000 tokens, then the student alone
        t0, c0 = time.perf_counter(), cpu_s()
        store = compute_teacher_logits(
            teacher,
            data[256],
            Path(workdir) / "store",
            TeacherLogitsArguments(top_k=opts.top_k, batch_size=2),
            progress=False,
        )
        tokens = len(data[256]) * 256
        results.append(
            {
                "setting": f"teacher logits store (top-{opts.top_k}), seq 256",
                "wall_s_per_1k_tokens": round(1000 * (time.perf_counter() - t0) / tokens, 2),
                "cpu_s_per_1k_tokens": round(1000 * (cpu_s() - c0) / tokens, 2),
            }
        )
        B.log(results[-1])
        offline = TeacherLogitsDataset(store)
        plan = [
            ("online fp32 seq256", teacher, data[256], 256, False),
            ("online bf16 seq256", teacher, data[256], 256, True),
            ("offline fp32 seq256", None, offline, 256, False),
            ("offline bf16 seq256", None, offline, 256, True),
            ("online bf16 seq128", teacher, data[128], 128, True),
            ("online bf16 seq512", teacher, data[512], 512, True),
        ]
        for tag, t, ds, seq_len, bf16 in plan:
            out = run(
                opts.student,
                t,
                ds,
                seq_len,
                opts.tokens_per_step // seq_len,
                bf16,
                opts.steps,
                opts.warmup,
                workdir,
                tag.replace(" ", "_"),
            )
            out["setting"] = tag
            results.append(out)
            B.log(out)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
