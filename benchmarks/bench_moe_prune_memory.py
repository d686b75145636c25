"""Time and peak memory of `prune_model` on a Qwen3-MoE-shaped model (random init, bf16, CPU); prints JSON.

Like `bench_prune_memory.py` (whose RSS helpers it uses): in a fresh process, the peak RSS is reset right before
`prune_model`, and the goal is  peak RSS during pruning - RSS before the model existed <= 1.1 x (original +
pruned weights). Experts, expert width, hidden size and depth are pruned at once, from random scores.

    python benchmarks/bench_moe_prune_memory.py [--hidden 1024 --layers 8 --experts 64 --expert-width 256]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import MiB, reset_peak, status_kib  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--expert-width", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    from hf_minitron import ImportanceScores, PruningConfig, prune_model

    rss_empty = status_kib("VmRSS") * 1024
    config = AutoConfig.for_model(
        "qwen3_moe",
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        moe_intermediate_size=args.expert_width,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        num_hidden_layers=args.layers,
        num_attention_heads=16,
        num_key_value_heads=4,
        head_dim=args.hidden // 16,
        tie_word_embeddings=False,
    )
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        for param in model.parameters():
            param.uniform_(-0.02, 0.02)
    original = sum(q.numel() * q.element_size() for q in model.parameters())
    n_params = sum(q.numel() for q in model.parameters())
    target = PruningConfig(
        num_experts=args.experts * 3 // 4,
        moe_intermediate_size=args.expert_width * 3 // 4,
        hidden_size=args.hidden * 3 // 4,
        num_hidden_layers=args.layers - 1,
        importance="activation",
    )
    g = torch.Generator().manual_seed(0)
    scores = ImportanceScores(
        experts=torch.rand(args.layers, args.experts, generator=g),
        expert_neurons=torch.rand(args.layers, args.experts, args.expert_width, generator=g),
        channels=torch.rand(args.hidden, generator=g),
        layers=torch.rand(args.layers, generator=g),
        metadata={"depth_metric": "block_importance"},
    )
    rss_before = status_kib("VmRSS") * 1024
    reset = reset_peak()
    start = time.perf_counter()
    prune_model(model, target, scores)
    seconds = time.perf_counter() - start
    peak = status_kib("VmHWM") * 1024
    pruned = sum(q.numel() * q.element_size() for q in model.parameters())
    goal = 1.1 * (original + pruned)
    print(
        json.dumps(
            {
                "model": {"model_type": "qwen3_moe", "params": n_params, "dtype": "bfloat16", **vars(args)},
                "target": {
                    k: v for k, v in target.to_dict().items() if type(v) is int and k != "width_multiple"
                },
                "pruned_params": sum(q.numel() for q in model.parameters()),
                "prune_seconds": round(seconds, 2),
                "original_MiB": round(original / MiB),
                "pruned_MiB": round(pruned / MiB),
                "rss_before_prune_MiB": round(rss_before / MiB),
                "peak_reset_before_prune": reset,
                "peak_minus_baseline_MiB": round((peak - rss_empty) / MiB),
                "goal_MiB (1.1 x (original + pruned))": round(goal / MiB),
                "within_goal": (peak - rss_empty) <= goal,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
