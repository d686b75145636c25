"""Architecture search on the quickstart teacher at 50% of its parameters; prints JSON.

What it measures, each student retrained by DistillationTrainer from the unpruned teacher with the same token
budget (same steps, batch and sequence length):
  1. the search table: width-only, depth-only and mixed candidates, loss right after pruning and after the
     short retraining, and whether the best candidate changes between the two;
  2. width vs depth at equal parameters (each depth-only candidate vs the width-only shape closest in size);
  3. one-shot vs iterative (2 stages, re-estimating importance in between) at 50% and 30% of the parameters
     (reductions of 50% and 70%), same total steps;
  4. activation vs Taylor vs magnitude importance at the practical 50% shape, after pruning and after distillation.

    python benchmarks/bench_search.py [--steps 40] [--max-candidates 8] [--output search.json]

About 5.5 min with the defaults on a shared 2-core CPU (README: pruning to a budget).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch  # noqa: E402


def _args(output_dir: str, steps: int, batch_size: int, lr: float):
    from hf_minitron import DistillationArguments

    return DistillationArguments(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=lr,
        warmup_steps=max(1, steps // 10),
        lr_scheduler_type="cosine",
        weight_decay=0.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
        use_cpu=not torch.cuda.is_available(),
    )


def _row(result) -> dict:
    d = result.to_dict()
    keep = ("name", "family", "params", "loss_after_pruning", "loss_after_retraining", "seconds")
    return {k: (round(d[k], 4) if isinstance(d[k], float) else d[k]) for k in keep}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40, help="Distillation steps per candidate.")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-candidates", type=int, default=8)
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("--eval-blocks", type=int, default=48)
    parser.add_argument("--output", default=None, help="Also write the JSON here.")
    parser.add_argument("--workdir", default="/tmp/hf-minitron-bench-search")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (2 oversubscribed cores run 10x slower than 1)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="A tiny teacher and 2 steps: checks the script runs."
    )
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("hf_minitron").setLevel(logging.INFO)

    from hf_minitron import PruningConfig, estimate_importance
    from hf_minitron.data import calibration_batches, pack_texts
    from hf_minitron.quickstart.corpus import builtin_corpus
    from hf_minitron.quickstart.teacher import load_or_train_teacher
    from hf_minitron.search import (
        count_parameters,
        prune_iteratively,
        resolve_target_params,
        search_architectures,
    )
    from hf_minitron.search.cost import shape_of
    from hf_minitron.search.run import evaluate_lm_loss
    from hf_minitron.search.space import Candidate, enumerate_candidates

    start = time.perf_counter()
    smoke = dict(vocab_size=512, hidden_size=64, intermediate_size=192, num_hidden_layers=4, steps=4)
    teacher, tokenizer, info = load_or_train_teacher(**(smoke if opts.smoke else {}))
    if opts.smoke:
        opts.steps, opts.max_candidates, opts.eval_blocks, opts.calibration_samples = 2, 4, 4, 8
    teacher.eval()
    train_texts, heldout_texts = builtin_corpus()
    train_ds = pack_texts(train_texts, tokenizer, opts.seq_len)
    eval_ds = pack_texts(heldout_texts, tokenizer, opts.seq_len, max_blocks=opts.eval_blocks)
    batches = calibration_batches(train_texts, tokenizer, opts.calibration_samples, opts.seq_len, 8)
    source = count_parameters(teacher.config)
    target = source // 2
    args = _args(opts.workdir, opts.steps, opts.batch_size, opts.lr)
    out = {
        "teacher": {
            "params": source,
            "shape": {**shape_of(teacher.config), "vocab_size": teacher.config.vocab_size},
            "eval_loss": round(evaluate_lm_loss(teacher, eval_ds), 4),
            "cached": info.get("cached"),
        },
        "settings": {
            "target_params": target,
            "tolerance": opts.tolerance,
            "steps_per_candidate": opts.steps,
            "tokens_per_candidate": opts.steps * opts.batch_size * opts.seq_len,
            "batch_size": opts.batch_size,
            "seq_len": opts.seq_len,
            "learning_rate": opts.lr,
            "calibration_samples": opts.calibration_samples,
            "eval_tokens": len(eval_ds) * (opts.seq_len - 1),
            "threads": opts.threads,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
    }
    scores = {}
    timings = {}
    for criterion in ("activation", "taylor", "magnitude"):
        t0 = time.perf_counter()
        scores[criterion] = estimate_importance(
            teacher, batches, PruningConfig(target_params=target, importance=criterion)
        )
        timings[criterion] = round(time.perf_counter() - t0, 2)
    out["importance_seconds"] = timings

    # 1. The search at 50% (activation importance, Minitron's default).
    candidates = enumerate_candidates(
        teacher.config,
        target,
        tolerance=opts.tolerance,
        max_candidates=opts.max_candidates,
        seq_len=opts.seq_len,
    )
    result = search_architectures(
        teacher,
        scores["activation"],
        target,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        args=args,
        steps_per_candidate=opts.steps,
        candidates=candidates,
        tolerance=opts.tolerance,
        seq_len=opts.seq_len,
    )
    out["search"] = {
        "table": [_row(r) for r in result.ranking],
        "best_after_retraining": result.ranking[0].candidate.name,
        "best_after_pruning": result.best_after_pruning.candidate.name,
        "ranking_changed": result.ranking_changed,
        "markdown": result.to_markdown(),
    }
    print(result.to_markdown(), file=sys.stderr)

    def practical(budget: int):
        """Minitron's practical shape for a budget (common factor on hidden and MLP, heads and layers kept)."""
        resolved = resolve_target_params(teacher.config, PruningConfig(target_params=budget))
        shape = {k: getattr(resolved, k) for k in ("hidden_size", "intermediate_size")}
        return Candidate.from_shape(teacher.config, shape, opts.seq_len)

    # 2. Width vs depth at equal parameters: each depth-only candidate against the width-only shape (heads kept)
    # whose parameter count is closest to it.
    pairs = []
    for depth in [r for r in result.ranking if r.candidate.family == "depth"]:
        widths = enumerate_candidates(
            teacher.config,
            depth.candidate.params,
            tolerance=0.05,
            families=("width",),
            max_candidates=None,
            seq_len=opts.seq_len,
        )
        widths = [c for c in widths if c.num_attention_heads == teacher.config.num_attention_heads]
        width = min(widths, key=lambda c: abs(c.params - depth.candidate.params))
        trained = next((r for r in result.ranking if r.candidate.name == width.name), None)
        if trained is None:
            trained = search_architectures(
                teacher,
                scores["activation"],
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                args=args,
                steps_per_candidate=opts.steps,
                candidates=[width],
            ).ranking[0]
        pairs.append({"width": _row(trained), "depth": _row(depth)})
    out["width_vs_depth"] = pairs

    # 3. One-shot vs iterative at 50% and 30% of the parameters, the same total steps.
    iterative = {}
    for keep in (0.5, 0.3):
        budget = int(source * keep)
        oneshot_candidate = practical(budget)
        shape = {k: getattr(oneshot_candidate, k) for k in ("hidden_size", "intermediate_size")}
        t0 = time.perf_counter()
        oneshot = search_architectures(
            teacher,
            scores["activation"],
            train_dataset=train_ds,
            eval_dataset=eval_ds,
            args=_args(opts.workdir, 2 * opts.steps, opts.batch_size, opts.lr),
            steps_per_candidate=2 * opts.steps,
            candidates=[oneshot_candidate],
        ).ranking[0]
        oneshot_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        student, history = prune_iteratively(
            teacher,
            PruningConfig(target_params=budget),
            batches,
            train_dataset=train_ds,
            args=args,
            stages=2,
            steps_per_stage=opts.steps,
            eval_dataset=eval_ds,
        )
        iterative[f"{int(keep * 100)}%"] = {
            "params": oneshot_candidate.params,
            "shape": shape,
            "one_shot": {
                "loss_after_pruning": round(oneshot.loss_after_pruning, 4),
                "loss_after_distillation": round(oneshot.loss_after_retraining, 4),
                "steps": 2 * opts.steps,
                "seconds": round(oneshot_seconds, 1),
            },
            "iterative": {
                "stages": [
                    {k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history
                ],
                "loss_after_distillation": round(history[-1]["loss_after_distillation"], 4),
                "steps": 2 * opts.steps,
                "seconds": round(time.perf_counter() - t0, 1),
            },
        }
        del student
    out["one_shot_vs_iterative"] = iterative

    # 4. Importance criteria at the practical 50% shape (the search already trained it from activation scores).
    shape50 = practical(target)
    criteria = {}
    for criterion, s in scores.items():
        done = [r for r in result.ranking if r.candidate.name == shape50.name and criterion == "activation"]
        if done:
            r = done[0]
        else:
            r = search_architectures(
                teacher,
                s,
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                args=args,
                steps_per_candidate=opts.steps,
                candidates=[shape50],
            ).ranking[0]
        criteria[criterion] = {
            "loss_after_pruning": round(r.loss_after_pruning, 4),
            "loss_after_distillation": round(r.loss_after_retraining, 4),
        }
    out["importance_criteria"] = {
        "shape": shape50.name,
        **criteria,
        "best_after_distillation": min(criteria, key=lambda c: criteria[c]["loss_after_distillation"]),
        "best_after_pruning": min(criteria, key=lambda c: criteria[c]["loss_after_pruning"]),
    }
    out["wall_seconds"] = round(time.perf_counter() - start, 1)
    text = json.dumps(out, indent=2)
    print(text, file=sys.__stdout__)
    if opts.output:
        with open(opts.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    # stdout carries the JSON alone: the Trainer's own log lines go to stderr
    with contextlib.redirect_stdout(sys.stderr):
        code = main()
    sys.exit(code)
