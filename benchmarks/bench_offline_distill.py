"""Offline (stored top-k) vs online distillation on the quickstart teacher; prints JSON.

The quickstart teacher (cached by `hf-minitron quickstart`, trained here when missing) is pruned as the quickstart
recipe does (width: hidden 192 -> 128, MLP 512 -> 256; `--hidden/--intermediate` for another student). Then:
  store     `compute_teacher_logits` over the training blocks for k in --ks: seconds, bytes per token.
  train     for online and each k, a fresh subprocess distills the same pruned student for --steps steps of the same
            blocks in the same order (batch 16 x 128 tokens, the quickstart's settings): held-out LM loss after
            training (the quickstart's held-out split), wall time, median step time, the RSS before training and the
            peak RSS during training (VmHWM reset just before `train()`; the online case holds the teacher).
  timing    in one process, interleaved: a distillation step (forward, loss, backward; same batch, no optimizer)
            online vs offline at each k, median of --repeats.

    python benchmarks/bench_offline_distill.py [--steps 160 --ks 8 32 128 --repeats 15]
    python benchmarks/bench_offline_distill.py --ks 128 --seeds 0 1 2 --repeats 0   # the gap over data orders

`--seeds`: each seed draws another training subset and order of the quickstart blocks (seed 0 is the default run);
the held-out gap to online distillation is reported per seed with its mean. `--values_dtype` sets the stored
log-probability dtype (bfloat16 by default). `--repeats 0` skips the interleaved timing. `--no_rescale_norms` prunes
the student without rescaling the norm gains (the default before `PruningConfig.rescale_norms` existed).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# DeepSpeed, when installed, would note its CPU fallback on stdout
os.environ.setdefault("DS_ACCELERATOR", "cpu")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def rss_mib() -> float:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mib() -> float:
    """Peak RSS since the last `reset_peak_rss` (or since the start)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def quickstart_teacher():
    from hf_minitron.cli.arguments import load_recipe
    from hf_minitron.quickstart import (
        QuickstartArguments,
        TeacherSettings,
        builtin_corpus,
        load_or_train_teacher,
    )

    recipe = load_recipe("quickstart")
    s = QuickstartArguments(**recipe["quickstart"])
    train_texts, held_texts = builtin_corpus(max_chars=s.max_chars)
    teacher, tokenizer, _ = load_or_train_teacher(
        s.cache_dir, train_texts,
        TeacherSettings(vocab_size=s.vocab_size, hidden_size=s.teacher_hidden_size,
                        intermediate_size=s.teacher_intermediate_size, num_hidden_layers=s.teacher_num_hidden_layers,
                        num_attention_heads=s.teacher_num_attention_heads,
                        num_key_value_heads=s.teacher_num_key_value_heads, seq_len=s.seq_len,
                        batch_size=s.batch_size, steps=s.teacher_steps, learning_rate=s.teacher_learning_rate,
                        seed=s.seed),
    )  # fmt: skip
    return teacher, tokenizer, train_texts, held_texts, s, recipe


def prepare(args, work: str) -> dict:
    """Pruned student (saved), training blocks (the first steps x batch of a seeded shuffle), held-out blocks."""
    from hf_minitron import PruningConfig, estimate_importance, prune_model
    from hf_minitron.data import calibration_batches, tokenize_and_pack

    teacher, tokenizer, train_texts, held_texts, s, recipe = quickstart_teacher()
    pruning = PruningConfig(
        **{
            **recipe["pruning"],
            "hidden_size": args.hidden,
            "intermediate_size": args.intermediate,
            **({"rescale_norms": False} if args.no_rescale_norms else {}),
        }  # fmt: skip
    )
    calib = calibration_batches(train_texts, tokenizer, s.calibration_samples, s.seq_len, batch_size=16)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student = prune_model(student, pruning, estimate_importance(student, calib, pruning))
    student.save_pretrained(os.path.join(work, "student"))
    teacher.save_pretrained(os.path.join(work, "teacher"))
    blocks = tokenize_and_pack(train_texts, tokenizer, s.seq_len)
    order = torch.randperm(len(blocks), generator=torch.Generator().manual_seed(args.seed))
    train = blocks[order[: args.steps * s.batch_size]]
    torch.save(
        {"train": train, "held": tokenize_and_pack(held_texts, tokenizer, s.seq_len)},
        os.path.join(work, "blocks.pt"),
    )
    return {
        "teacher_parameters": sum(p.numel() for p in teacher.parameters()),
        "student_parameters": sum(p.numel() for p in student.parameters()),
        "vocab_size": teacher.config.vocab_size,
        "batch_size": s.batch_size,
        "seq_len": s.seq_len,
        "distill": recipe["distillation"],
    }


def dataset_of(blocks: torch.Tensor):
    from datasets import Dataset

    ids = blocks.tolist()
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "labels": ids})


def build_stores(args, work: str) -> dict:
    from transformers import AutoModelForCausalLM

    from hf_minitron import compute_teacher_logits
    from hf_minitron.distillation import TeacherLogitsArguments

    teacher = AutoModelForCausalLM.from_pretrained(os.path.join(work, "teacher"), dtype=torch.float32)
    train = torch.load(os.path.join(work, "blocks.pt"))["train"]
    data = dataset_of(train)
    out = {}
    for k in args.ks:
        start = time.perf_counter()
        settings = TeacherLogitsArguments(top_k=k, batch_size=16, values_dtype=args.values_dtype)
        path = compute_teacher_logits(
            teacher, data, os.path.join(work, f"store-k{k}"), settings, progress=False
        )
        size = sum(
            os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors")
        )
        out[f"k{k}"] = {"seconds": round(time.perf_counter() - start, 1), "bytes": size,
                        "bytes_per_token": round(size / train.numel(), 1)}  # fmt: skip
    return out


def train_case(case: str, work: str, info: dict) -> dict:
    """One training run (called in a fresh subprocess): held-out loss, wall time, memory."""
    from transformers import AutoModelForCausalLM, TrainerCallback, default_data_collator

    from hf_minitron import DistillationArguments, DistillationTrainer, TeacherLogitsDataset
    from hf_minitron.evaluation import perplexity_on_blocks

    torch.set_num_threads(1)
    blocks = torch.load(os.path.join(work, "blocks.pt"))
    student = AutoModelForCausalLM.from_pretrained(os.path.join(work, "student"), dtype=torch.float32)
    teacher = None
    if case == "online":
        teacher = AutoModelForCausalLM.from_pretrained(os.path.join(work, "teacher"), dtype=torch.float32)
        data = dataset_of(blocks["train"])
    else:
        data = TeacherLogitsDataset(os.path.join(work, f"store-{case}"))
    steps = len(blocks["train"]) // info["batch_size"]
    args = DistillationArguments(
        output_dir=os.path.join(work, f"run-{case}"), max_steps=steps, per_device_train_batch_size=info["batch_size"],
        train_sampling_strategy="sequential", report_to="none", save_strategy="no", logging_strategy="no",
        use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True, seed=0,
        **{k: v for k, v in info["distill"].items()},
    )  # fmt: skip

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_begin(self, *a, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **kw):
            self.times.append(time.perf_counter() - self.t)

    timer = StepTimes()
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data,
                                  data_collator=default_data_collator, callbacks=[timer])  # fmt: skip
    process_peak = peak_rss_mib()
    reset_peak_rss()
    rss_before, start = rss_mib(), time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    train_peak = peak_rss_mib()
    held = perplexity_on_blocks(student, blocks["held"], batch_size=16, progress=False)
    return {
        "heldout_loss": round(held["loss"], 4),
        "train_seconds": round(seconds, 1),
        "median_step_seconds": round(statistics.median(timer.times[2:]), 4),
        "rss_before_train_mib": round(rss_before, 1),
        "peak_rss_during_train_mib": round(train_peak, 1),
        "train_added_peak_rss_mib": round(train_peak - rss_before, 1),
        "peak_rss_before_train_mib": round(process_peak, 1),
    }


def interleaved_timing(args, work: str, info: dict) -> dict:
    """Forward + loss + backward of one batch, online vs offline at each k, alternated; median seconds."""
    from transformers import AutoModelForCausalLM, default_data_collator

    from hf_minitron import DistillationArguments, DistillationTrainer, TeacherLogitsDataset

    torch.set_num_threads(1)
    student = AutoModelForCausalLM.from_pretrained(os.path.join(work, "student"), dtype=torch.float32)
    teacher = AutoModelForCausalLM.from_pretrained(os.path.join(work, "teacher"), dtype=torch.float32)
    bs = info["batch_size"]
    dargs = DistillationArguments(output_dir=os.path.join(work, "timing"), report_to="none", use_cpu=True)
    trainers, batches = {}, {}
    online_rows = dataset_of(torch.load(os.path.join(work, "blocks.pt"))["train"][:bs])
    trainers["online"] = DistillationTrainer(model=student, teacher_model=teacher, args=dargs)
    batches["online"] = default_data_collator([online_rows[i] for i in range(bs)])
    for k in args.ks:
        store = TeacherLogitsDataset(os.path.join(work, f"store-k{k}"))
        trainers[f"k{k}"] = DistillationTrainer(model=student, args=dargs, train_dataset=store)
        batches[f"k{k}"] = default_data_collator([store[i] for i in range(bs)])
    student.train()
    times = {name: [] for name in trainers}
    for _ in range(args.repeats):
        for name, trainer in trainers.items():
            student.zero_grad(set_to_none=True)
            start = time.perf_counter()
            trainer.compute_loss(student, batches[name]).backward()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t[1:]) for name, t in times.items()}
    return {name: {"median_seconds": round(m, 4), "vs_online": round(m / median["online"], 3)}
            for name, m in median.items()}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=160, help="Training steps of every run (quickstart: 160)."
    )
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 32, 128])
    parser.add_argument("--hidden", type=int, default=128, help="Student hidden size (quickstart: 128).")
    parser.add_argument("--intermediate", type=int, default=256, help="Student MLP size (quickstart: 256).")
    parser.add_argument("--repeats", type=int, default=15, help="Interleaved timing repeats (0: skip).")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="Training-subset seeds.")
    parser.add_argument("--values_dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--no_rescale_norms", action="store_true", help="Prune without rescaling norm gains.")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a subprocess of the train phase
        info = json.loads(open(os.path.join(args.work, "info.json")).read())
        print(json.dumps(train_case(args.case, args.work, info)))
        return
    torch.set_num_threads(1)
    results = {seed: run_seed(args, seed) for seed in args.seeds}
    first = results[args.seeds[0]]
    out = {
        "machine": f"{os.cpu_count()} CPU cores, torch threads 1, no GPU",
        "setup": {**first["setup"], "seeds": args.seeds, "values_dtype": args.values_dtype,
                  "rescale_norms": not args.no_rescale_norms},
        "store": first["store"], "train": first["train"], "step_timing": first["step_timing"],
    }  # fmt: skip
    if len(args.seeds) > 1:
        out["by_seed"] = {seed: {case: r["heldout_loss_minus_online"] for case, r in res["train"].items()}
                          for seed, res in results.items()}  # fmt: skip
        out["mean_gap"] = {
            case: round(statistics.mean(g[case] for g in out["by_seed"].values()), 4)
            for case in first["train"]
        }
        out["stdev_gap"] = {
            case: round(statistics.stdev(g[case] for g in out["by_seed"].values()), 4)
            for case in first["train"]
        }
    print(json.dumps(out, indent=2))


def run_seed(args, seed: int) -> dict:
    """Store, train and time every case on the training subset drawn with `seed`."""
    args = argparse.Namespace(**{**vars(args), "seed": seed})
    with tempfile.TemporaryDirectory(prefix="bench-offline-") as work:
        info = prepare(args, work)
        with open(os.path.join(work, "info.json"), "w") as f:
            json.dump(info, f)
        stores = build_stores(args, work)
        runs = {}
        for case in ["online", *(f"k{k}" for k in args.ks)]:
            result = subprocess.run([sys.executable, __file__, "--case", case, "--work", work],
                                    capture_output=True, text=True, check=False)  # fmt: skip
            if result.returncode:
                raise SystemExit(result.stderr[-3000:])
            runs[case] = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"seed {seed} {case}: {runs[case]}", file=sys.stderr, flush=True)
        timing = interleaved_timing(args, work, info) if args.repeats > 0 else None
    online = runs["online"]["heldout_loss"]
    for run in runs.values():
        run["heldout_loss_minus_online"] = round(run["heldout_loss"] - online, 4)
    setup = {**{k: v for k, v in info.items() if k != "distill"}, "steps": args.steps,
             "tokens": args.steps * info["batch_size"] * info["seq_len"],
             "teacher_to_student": round(info["teacher_parameters"] / info["student_parameters"], 2)}  # fmt: skip
    return {"setup": setup, "store": stores, "train": runs, "step_timing": timing}


if __name__ == "__main__":
    main()
