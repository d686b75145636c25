"""Time and peak memory of `prune_model` on a ~1B-parameter Llama-shaped model (random init, bf16, CPU).

The measurement runs in a fresh child process. Its peak RSS is reset (Linux `/proc/self/clear_refs`) right
before `prune_model`, so the peak covers the surgery only; the goal is

    peak RSS during pruning - RSS before the model existed  <=  1.1 * (original weights + pruned weights).

The scores are random (this measures surgery, not calibration). Prints JSON.

    python benchmarks/bench_prune_memory.py [--hidden 2048 --layers 16 --intermediate 8192]
    python benchmarks/bench_prune_memory.py --model-type phi3   # fused qkv_proj / gate_up_proj
    python benchmarks/bench_prune_memory.py --model-type nemotron_h --layers 52 --config-json '{...}'  # hybrid
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import MiB, in_fresh_process, reset_peak, status_kib  # noqa: E402


def child(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from hf_minitron import ImportanceScores, PruningConfig, prune_model

    rss_empty = status_kib("VmRSS") * 1024
    sizes = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.hidden // args.heads,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=args.tied,
    )
    config = AutoConfig.for_model(args.model_type, **{**sizes, **json.loads(args.config_json)})
    start = time.perf_counter()
    with no_init_weights():  # skip the slow default init: allocate, then a cheap fill
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.tie_weights()  # no_init_weights skips the tying that from_config otherwise does
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.02, 0.02)
    build_seconds = time.perf_counter() - start
    original_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    target = PruningConfig(
        hidden_size=args.hidden * 3 // 4,
        intermediate_size=args.intermediate * 3 // 4,
        num_hidden_layers=args.layers - 2,
        num_key_value_heads=args.kv_heads // 2 if args.prune_heads else None,
    )
    g = torch.Generator().manual_seed(0)
    scores = ImportanceScores(
        neurons=torch.rand(args.layers, args.intermediate, generator=g),
        channels=torch.rand(args.hidden, generator=g),
        layers=torch.rand(args.layers, generator=g),
        heads=torch.rand(args.layers, args.heads, generator=g),
        metadata={"depth_metric": "block_importance"},
    )
    rss_before = status_kib("VmRSS") * 1024
    reset = reset_peak()
    start = time.perf_counter()
    prune_model(model, target, scores)
    prune_seconds = time.perf_counter() - start
    peak = status_kib("VmHWM") * 1024
    pruned_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    budget = 1.1 * (original_bytes + pruned_bytes)
    return {
        "model": {
            "params": n_params,
            "model_type": args.model_type,
            "hidden": args.hidden,
            "intermediate": args.intermediate,
            "layers": args.layers,
            "heads": args.heads,
            "kv_heads": args.kv_heads,
            "vocab": args.vocab,
            "tied": args.tied,
            "dtype": "bfloat16",
            "extra_config": json.loads(args.config_json),
        },
        "target": {
            k: v
            for k, v in target.to_dict().items()
            if k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_key_value_heads")
        },
        "pruned_params": sum(p.numel() for p in model.parameters()),
        "build_seconds": round(build_seconds, 2),
        "prune_seconds": round(prune_seconds, 2),
        "original_MiB": round(original_bytes / MiB),
        "pruned_MiB": round(pruned_bytes / MiB),
        "rss_without_model_MiB": round(rss_empty / MiB),
        "rss_before_prune_MiB": round(rss_before / MiB),
        "peak_rss_during_prune_MiB": round(peak / MiB),
        "peak_reset_before_prune": reset,
        "peak_minus_baseline_MiB": round((peak - rss_empty) / MiB),
        "goal_MiB (1.1 x (original + pruned))": round(budget / MiB),
        "within_goal": (peak - rss_empty) <= budget,
        "threads": args.threads,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-type", default="llama", help="a supported model_type (phi3: fused projections)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--intermediate", type=int, default=8192)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--tied", action="store_true")
    p.add_argument("--prune-heads", action="store_true", help="also drop half the KV groups (fused qkv rows)")
    p.add_argument(
        "--config-json",
        default="{}",
        help="extra config fields as JSON (a hybrid's layers_block_type, Mamba sizes)",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    result = child(args) if args.child else in_fresh_process(__file__, argv)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
