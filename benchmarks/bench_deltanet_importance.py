"""Importance estimation on a Qwen3-Next-shaped hybrid vs the plain forward over the same batches; prints JSON.

The layer pattern is Qwen3-Next-80B-A3B's (48 layers, `full_attention_interval` 4: three Gated DeltaNet layers,
then one gated full-attention layer, every layer with a sparse MoE block and a shared expert), the layers narrow so
that it runs on a CPU. Runs are interleaved (plain trunk, plain full logits, `estimate_importance` scoring every
axis: DeltaNet heads, attention heads, hidden channels, experts, expert and shared-expert neurons, layers) and the
median of `--repeats` is taken; the ratio is importance over the plain trunk forward (`logits_to_keep=1`, what the
estimator runs), paired per repeat, in wall and in process CPU seconds. One thread by default: on the shared 2-core
machine, two threads made the same plain pass take 10 s to 80 s (spinning threads under contention).

Also reports, from the config on the meta device (no weights), the total and active parameter counts of
transformers' `Qwen3NextConfig` defaults (the 80B-A3B shape), and the total after the README's example target.

    python benchmarks/bench_deltanet_importance.py [--hidden 512 --batches 4 --seq 128 --repeats 5 --threads 1]
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
from common import add_calibration_args, batches_for, interleaved, plain  # noqa: E402

from hf_minitron import PruningConfig, estimate_importance  # noqa: E402
from hf_minitron.counting import count_active_parameters, count_parameters  # noqa: E402

LAYERS, INTERVAL = 48, 4  # Qwen3-Next-80B-A3B


def pattern() -> list[str]:
    return ["linear_attention" if (i + 1) % INTERVAL else "full_attention" for i in range(LAYERS)]


def build(args) -> torch.nn.Module:
    h = args.hidden
    config = AutoConfig.for_model(
        "qwen3_next",
        vocab_size=args.vocab,
        hidden_size=h,
        intermediate_size=h * 2,
        num_hidden_layers=LAYERS,
        layer_types=pattern(),
        num_attention_heads=8,  # 80B: 16 heads of 256 in 2 KV groups
        num_key_value_heads=2,
        head_dim=h // 8,
        linear_num_key_heads=4,  # 80B: 16 key heads, 32 value heads, 128 wide
        linear_num_value_heads=8,
        linear_key_head_dim=h // 8,
        linear_value_head_dim=h // 8,
        num_experts=args.experts,
        num_experts_per_tok=args.top_k,
        moe_intermediate_size=h // 4,
        shared_expert_intermediate_size=h // 4,
        max_position_embeddings=max(args.seq, 512),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def published_shape() -> dict:
    """Qwen3NextConfig's defaults (hidden 2048, 48 layers, 512 experts top-10 of width 512, 16 / 32 DeltaNet
    key / value heads of 128, 16 / 2 attention heads of 256), counted on the meta device."""
    config = AutoConfig.for_model("qwen3_next")
    target = PruningConfig(
        linear_num_key_heads=12, num_key_value_heads=1, hidden_size=1536
    )  # README's example
    target.validate_for(config)
    sizes = target.target_sizes(config)
    return {
        "total_params": count_parameters(config),
        "active_params": count_active_parameters(config),
        "example_target": {k: v for k, v in sizes.items() if v != getattr(config, k)},
        "example_target_params": count_parameters(config, sizes),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--experts", type=int, default=32)
    p.add_argument("--top-k", type=int, default=4)
    add_calibration_args(p)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build(args)
    batches = batches_for(args)
    c = model.config
    target = PruningConfig(
        hidden_size=c.hidden_size * 3 // 4,
        num_key_value_heads=1,
        linear_num_value_heads=c.linear_num_value_heads // 2,
        num_experts=c.num_experts // 2,
        moe_intermediate_size=c.moe_intermediate_size // 2,
        shared_expert_intermediate_size=c.shared_expert_intermediate_size // 2,
        num_hidden_layers=c.num_hidden_layers - 8,
        importance="activation",
    )
    runs = {
        "plain_trunk": lambda: plain(model, batches, logits_to_keep=1),
        "plain_full_logits": lambda: plain(model, batches),
        "importance": lambda: estimate_importance(model, batches, target),
    }
    times, cpu = interleaved(runs, args.repeats)
    ratios = [i / t for i, t in zip(times["importance"], times["plain_trunk"])]
    cpu_ratios = [i / t for i, t in zip(cpu["importance"], cpu["plain_trunk"])]
    scores = estimate_importance(model, batches[:1], target)
    result = {
        "machine": f"CPU, torch threads={args.threads}",
        "model": {
            "layers": LAYERS,
            "full_attention_interval": INTERVAL,
            "hidden_size": c.hidden_size,
            "linear_num_key_heads": c.linear_num_key_heads,
            "linear_num_value_heads": c.linear_num_value_heads,
            "num_attention_heads": c.num_attention_heads,
            "num_key_value_heads": c.num_key_value_heads,
            "num_experts": c.num_experts,
            "num_experts_per_tok": c.num_experts_per_tok,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "scored_axes": sorted(k for k in scores.tensors if scores.get(k) is not None),
        "batches": args.batches,
        "batch_size": args.batch_size,
        "seq": args.seq,
        "repeats": args.repeats,
        "seconds_median": {k: statistics.median(v) for k, v in times.items()},
        "times": times,
        "cpu_seconds_median": {k: statistics.median(v) for k, v in cpu.items()},
        "importance_over_plain_trunk_median": statistics.median(ratios),
        "importance_over_plain_trunk_runs": ratios,
        "importance_over_plain_trunk_cpu_median": statistics.median(cpu_ratios),
        "importance_over_plain_trunk_cpu_runs": cpu_ratios,
        "load_average_1min": os.getloadavg()[0],
        "qwen3_next_80b_a3b_config_defaults": published_shape(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
