"""Activation vs Taylor vs magnitude importance over several seeds, to choose the default criterion.

On the quickstart teacher pruned to Minitron's practical 50% shape: each seed draws other calibration documents
and another distillation seed; every criterion is scored, pruned and distilled for the same steps and tokens, and
held-out loss is taken right after pruning and after distillation. Prints JSON (per seed, mean, wins).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_search import _args  # noqa: E402  (same distillation settings as the search benchmark)

CRITERIA = ("activation", "taylor", "magnitude")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--calibration-samples", type=int, default=64)
    parser.add_argument("--eval-blocks", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", default="/tmp/hf-minitron-bench-criteria")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)

    from hf_minitron import PruningConfig, estimate_importance
    from hf_minitron.data import calibration_batches, pack_texts
    from hf_minitron.quickstart.corpus import builtin_corpus
    from hf_minitron.quickstart.teacher import load_or_train_teacher
    from hf_minitron.search import count_parameters, resolve_target_params, search_architectures
    from hf_minitron.search.space import Candidate

    start = time.perf_counter()
    teacher, tokenizer, _ = load_or_train_teacher()
    teacher.eval()
    train_texts, heldout_texts = builtin_corpus()
    train_ds = pack_texts(train_texts, tokenizer, opts.seq_len)
    eval_ds = pack_texts(heldout_texts, tokenizer, opts.seq_len, max_blocks=opts.eval_blocks)
    target = count_parameters(teacher.config) // 2
    resolved = resolve_target_params(teacher.config, PruningConfig(target_params=target))
    shape = Candidate.from_shape(
        teacher.config, {"hidden_size": resolved.hidden_size, "intermediate_size": resolved.intermediate_size}
    )
    runs = []
    for seed in range(opts.seeds):
        texts = list(train_texts)
        random.Random(seed).shuffle(texts)
        batches = calibration_batches(texts, tokenizer, opts.calibration_samples, opts.seq_len, 8)
        args = _args(opts.workdir, opts.steps, opts.batch_size, opts.lr)
        args.seed = seed
        row = {"seed": seed}
        for criterion in CRITERIA:
            scores = estimate_importance(
                teacher, batches, PruningConfig(target_params=target, importance=criterion)
            )
            r = search_architectures(
                teacher,
                scores,
                train_dataset=train_ds,
                eval_dataset=eval_ds,
                args=args,
                steps_per_candidate=opts.steps,
                candidates=[shape],
                seed=seed,
            ).ranking[0]
            row[criterion] = {
                "after_pruning": round(r.loss_after_pruning, 4),
                "after_distillation": round(r.loss_after_retraining, 4),
            }
        row["best_after_distillation"] = min(CRITERIA, key=lambda c: row[c]["after_distillation"])
        runs.append(row)
        print(json.dumps(row), file=sys.stderr)

    def mean(c, key):
        return round(statistics.mean(r[c][key] for r in runs), 4)

    out = {
        "shape": shape.name,
        "params": shape.params,
        "steps": opts.steps,
        "tokens_per_student": opts.steps * opts.batch_size * opts.seq_len,
        "runs": runs,
        "mean": {
            c: {
                "after_pruning": mean(c, "after_pruning"),
                "after_distillation": mean(c, "after_distillation"),
            }
            for c in CRITERIA
        },
        "wins_after_distillation": {
            c: sum(r["best_after_distillation"] == c for r in runs) for c in CRITERIA
        },
        "wall_seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(out, indent=2), file=sys.__stdout__)
    return 0


if __name__ == "__main__":
    # stdout carries the JSON alone: the Trainer's own log lines go to stderr
    with contextlib.redirect_stdout(sys.stderr):
        code = main()
    sys.exit(code)
