"""Held-out loss right after pruning a real checkpoint with the norm gains not rescaled, rescaled by the fixed
sqrt(old / new width), or by the data-aware factor (the energy each norm's input loses on the calibration data),
for activation and magnitude importance (scored once per criterion). Prints JSON.

    python benchmarks/real_models/norm_rescale.py gemma     # Gemma 3 270M to half its parameters, as gemma.py
    python benchmarks/real_models/norm_rescale.py qwen      # Qwen2.5-Coder-1.5B to the 0.5B count

One model in memory at a time, bf16, one thread. Needs `make real-models` first (Q4_K_M-dequantized weights).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE), str(HERE.parents[1])]
from bench_real_models import blocks_from, documents, heldout_ppl, load, log, n_params, split_documents  # noqa: E402
from fetch import hf_path  # noqa: E402

MODELS = {  # name, target params (None: half), max characters per document (as each model's benchmark)
    "gemma": ("gemma-3-270m-q4_k_m", None, 4000),
    "qwen": ("qwen2.5-coder-1.5b-instruct-q4_k_m", 494_032_768, 2000),
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", choices=sorted(MODELS))
    p.add_argument("--criteria", nargs="*", default=["activation", "magnitude"])
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--eval-blocks", type=int, default=16)
    p.add_argument("--calibration-blocks", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--hidden", type=int, default=None, help="prune the hidden size alone to this (rescale_norms.py)"
    )
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument(
        "--residual-norms",
        nargs="*",
        default=[],
        help="also a run with the data-aware factor only on these norms (last name part), the fixed one elsewhere",
    )
    p.add_argument("--variants", nargs="*", default=["off", "fixed", "data-aware"])
    opts = p.parse_args(argv)
    torch.set_num_threads(opts.threads)
    from transformers import AutoTokenizer

    from hf_minitron import PruningConfig, estimate_importance, prune_model
    from hf_minitron.importance.estimate import norm_input_statistics, requested_axes

    name, target, max_chars = MODELS[opts.model]
    wall, cpu = time.perf_counter(), time.process_time()
    tokenizer = AutoTokenizer.from_pretrained(hf_path(name))
    held, calib, _ = split_documents(documents())
    eval_blocks = blocks_from(held, tokenizer, opts.seq_len, opts.eval_blocks, max_chars)
    calib_blocks = blocks_from(calib, tokenizer, opts.seq_len, opts.calibration_blocks, max_chars)
    batches = [{"input_ids": b, "attention_mask": torch.ones_like(b)} for b in calib_blocks.split(2)]
    dtype = getattr(torch, opts.dtype)
    model = load(name, dtype)
    total = n_params(model)
    target = None if opts.hidden else target or total // 2
    sizes = {"hidden_size": opts.hidden} if opts.hidden else {"target_params": target}
    out = {
        "model": name,
        "params": total,
        "target": sizes,
        "dtype": opts.dtype,
        "threads": opts.threads,
        "note": "Q4_K_M-dequantized weights; 2-core shared CPU, no GPU",
        "unpruned": heldout_ppl(model, eval_blocks, 4),
    }
    log("unpruned", out["unpruned"])
    for criterion in opts.criteria:
        config = PruningConfig(**sizes, importance=criterion, norm_rescale_factor="data")
        model = model or load(name, dtype)
        t0 = time.perf_counter()
        scores = estimate_importance(model, None if criterion == "magnitude" else batches, config)
        importance_s = time.perf_counter() - t0
        axes = requested_axes(model.config, config)
        # each norm's per-channel input mean square: from the scores' own pass, or one forward for magnitude
        stats = {"data-aware": scores.norm_inputs or norm_input_statistics(model, batches, axes)}
        rows = {
            "importance_s": round(importance_s, 1),
            "norms_with_statistics": len(stats["data-aware"]),
        }
        model = None
        if opts.residual_norms:  # norms whose output is added to the residual stream (Gemma's post-norms)
            stats["residual"] = {
                k: v for k, v in stats["data-aware"].items() if k.rsplit(".", 1)[-1] in opts.residual_norms
            }
        for rescale in [*opts.variants, *(["residual"] if opts.residual_norms else [])]:
            student = load(name, dtype)
            scores.norm_inputs = stats.get(rescale, {})
            pruned = PruningConfig(
                **sizes,
                importance=criterion,
                rescale_norms=rescale != "off",
                norm_rescale_factor="width" if rescale in ("off", "fixed") else "data",
            )
            prune_model(student, pruned, scores)
            c = student.config
            rows["shape"] = {
                k: getattr(c, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers")
            }
            rows["pruned_params"] = n_params(student)
            rows[rescale] = heldout_ppl(student, eval_blocks, 4)
            log(criterion, rescale, rows[rescale])
            del student
        out[criterion] = rows
    out["wall_s"] = round(time.perf_counter() - wall, 1)
    out["cpu_s"] = round(time.process_time() - cpu, 1)
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
