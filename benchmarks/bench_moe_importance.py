"""Expert importance cost vs a plain no-grad forward over the same batches, side by side in one run; prints JSON.

A randomly initialized Qwen3-MoE-shaped model with few layers and a realistic expert count (64 experts, top-8),
runs interleaved (plain, ours) and the median of `--repeats` taken:
  * plain forward of the trunk (`logits_to_keep=1`, as the statistics pass runs), stock experts implementation;
  * `estimate_importance` for experts (REAP saliency) and expert neurons, activation criterion, one pass.

    python benchmarks/bench_moe_importance.py [--hidden 512 --layers 2 --experts 64 --top-k 8 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import add_calibration_args, batches_for, plain, timed  # noqa: E402

from hf_minitron import PruningConfig, estimate_importance  # noqa: E402


def build(args) -> torch.nn.Module:
    config = AutoConfig.for_model(
        "qwen3_moe",
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        moe_intermediate_size=args.expert_width,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads // 4,
        head_dim=args.hidden // args.heads,
        max_position_embeddings=max(args.seq, 512),
        norm_topk_prob=True,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--expert-width", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    add_calibration_args(parser, batch_size=4, seq=256)
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    model = build(args)
    batches = batches_for(args)
    target = PruningConfig(
        num_experts=args.experts * 3 // 4,
        moe_intermediate_size=args.expert_width // 2,
        importance="activation",
    )
    plain(model, batches[:1])  # warm-up
    estimate_importance(model, batches[:1], target)
    runs = {"plain_forward": [], "expert_importance": []}
    for _ in range(args.repeats):
        runs["plain_forward"].append(timed(lambda: plain(model, batches)))
        runs["expert_importance"].append(timed(lambda: estimate_importance(model, batches, target)))
    wall = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    report = {
        "model": "qwen3_moe (random init)",
        "shape": {
            "hidden_size": args.hidden,
            "num_hidden_layers": args.layers,
            "num_experts": args.experts,
            "num_experts_per_tok": args.top_k,
            "moe_intermediate_size": args.expert_width,
        },
        "tokens": args.batches * args.batch_size * args.seq,
        "threads": torch.get_num_threads(),
        "experts_implementation": model.config._experts_implementation,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "ratio_wall": wall["expert_importance"] / wall["plain_forward"],
        "ratio_cpu": cpu["expert_importance"] / cpu["plain_forward"],
        "repeats": args.repeats,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
