"""Per-rank peak memory of a sharded distillation step vs the plain cross-entropy step of the same sharded student.

Two processes (torchrun, gloo on the CPU), one block of --seq-len tokens per rank, Llama-shaped student and teacher
(vocab --vocab), float32, AdamW; each case in a fresh torchrun launch:
  plain   the student alone, sharded, its own cross-entropy (labels: full logits)
  ours    hf_minitron's distillation step with the same sharded student and the teacher sharded the same way
          (chunked forward KL from final hidden states)
--sharding zero3: transformers.Trainer / DistillationTrainer with DeepSpeed ZeRO-3 (`deepspeed=` config; the teacher is
a ZeRO-3 inference engine), --steps training steps. --sharding fsdp2: FSDP2 `fully_shard` of every decoder layer and
the root (the teacher through `shard_teacher_fsdp2`), a hand-written loop of --steps steps (forward, loss, backward,
AdamW step): accelerate does not enable FSDP on the CPU.
Each rank reports its RSS before the first step and its peak RSS (VmHWM, reset just before the steps); the JSON gives
the largest rank's figures and the ratio ours / plain.

    python benchmarks/bench_distill_sharded_memory.py [--sharding zero3 --vocab 131072 --seq-len 2048]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_distill_memory import build  # noqa: E402
from bench_offline_distill import peak_rss_mib, reset_peak_rss, rss_mib  # noqa: E402

ZERO3 = {
    "zero_optimization": {"stage": 3},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "train_batch_size": "auto",
    "gradient_clipping": "auto",
    "zero_allow_untested_optimizer": True,
}


def blocks(args, rank: int) -> dict:
    """This rank's block: input_ids / attention_mask / labels `[1, seq_len]`."""
    import torch

    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(3, args.vocab, (args.steps, args.seq_len), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def run_zero3(case: str, args, rank: int, tmp: str) -> dict:
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from hf_minitron import DistillationArguments, DistillationTrainer

    student, teacher = build(args, args.layers, seed=1), build(args, args.teacher_layers, seed=2)
    data = Dataset.from_dict({k: v.tolist() for k, v in blocks(args, rank).items()})
    common = dict(output_dir=tmp, max_steps=args.steps, per_device_train_batch_size=1, report_to="none",
                  save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True, ddp_backend="gloo",
                  dataloader_num_workers=0, deepspeed=ZERO3, train_sampling_strategy="sequential")  # fmt: skip
    if case == "plain":
        trainer = Trainer(model=student, args=TrainingArguments(**common), train_dataset=data)
    else:
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=DistillationArguments(**common),
                                      train_dataset=data)  # fmt: skip
    del student, teacher
    return measure(lambda: trainer.train())


def run_fsdp2(case: str, args, rank: int, tmp: str) -> dict:
    import torch
    from torch.distributed.fsdp import fully_shard

    from hf_minitron import DistillationTrainer
    from hf_minitron.distillation.placement import shard_teacher_fsdp2
    from hf_minitron.distillation.trainer import DistillationArguments

    student = build(args, args.layers, seed=1)
    for layer in student.model.layers:
        fully_shard(layer)
    fully_shard(student)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-4)
    data = blocks(args, rank)
    trainer = None
    if case == "ours":
        teacher = shard_teacher_fsdp2(build(args, args.teacher_layers, seed=2))
        dargs = DistillationArguments(output_dir=tmp, report_to="none", use_cpu=True)
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=dargs)
    student.train()

    def steps():
        for step in range(args.steps):
            batch = {k: v[step : step + 1] for k, v in data.items()}
            if trainer is None:
                loss = student(**batch, use_cache=False).loss
            else:
                loss = trainer.compute_loss(student, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return measure(steps)


def measure(fn) -> dict:
    import gc

    gc.collect()
    reset_peak_rss()
    before = rss_mib()
    fn()
    return {"rss_before_mib": round(before, 1), "peak_rss_mib": round(peak_rss_mib(), 1)}


def worker(args) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    if args.sharding == "fsdp2":
        dist.init_process_group("gloo")
    with tempfile.TemporaryDirectory(prefix="bench-sharded-") as tmp:
        run = run_zero3 if args.sharding == "zero3" else run_fsdp2
        result = {"rank": rank, **run(args.case, args, rank, tmp)}
    print("RESULT " + json.dumps(result), flush=True)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sharding", choices=["zero3", "fsdp2"], default="zero3")
    parser.add_argument("--vocab", type=int, default=131072)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--teacher-layers", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--case", choices=["plain", "ours"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        worker(args)
        return
    results = {}
    for case in ("plain", "ours"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
               __file__, *sys.argv[1:], "--case", case]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        ranks = [json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode or len(ranks) != 2:
            raise SystemExit(out.stderr[-3000:])
        results[case] = {
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ranks),
            "rss_before_mib": max(r["rss_before_mib"] for r in ranks),
            "ranks": ranks,
        }
        print(f"{case}: {results[case]}", file=sys.stderr, flush=True)
    plain, ours = results["plain"], results["ours"]
    print(json.dumps({
        "machine": f"{os.cpu_count()} CPU cores, 2 processes (gloo), torch threads 1, no GPU",
        "setup": {"sharding": args.sharding, "vocab": args.vocab, "seq_len_per_rank": args.seq_len,
                  "hidden": args.hidden, "student_layers": args.layers, "teacher_layers": args.teacher_layers,
                  "steps": args.steps, "dtype": "float32", "optimizer": "AdamW"},
        "cases": results,
        "peak_ours_vs_plain": round(ours["peak_rss_mib"] / plain["peak_rss_mib"], 3),
        "step_added_ours_vs_plain": round((ours["peak_rss_mib"] - ours["rss_before_mib"])
                                          / (plain["peak_rss_mib"] - plain["rss_before_mib"]), 3),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
