"""Importance estimation on a Nemotron-H-shaped hybrid vs the plain forward over the same batches; prints JSON.

The layer pattern is Nemotron-H-8B's (`hybrid_override_pattern` of nvidia/Nemotron-H-8B-Base-8K: 52 layers, 24
Mamba-2, 4 attention, 24 MLP), the layers narrow so that it runs on a CPU. Runs are interleaved (plain trunk,
plain full logits, `estimate_importance`) and the median of `--repeats` is taken; the ratio is importance over
the plain trunk forward (`logits_to_keep=1`, what the estimator runs), measured in the same run.

Also reports, from configs on the meta device (no weights), the parameter counts of Nemotron-H-8B (transformers'
`NemotronHConfig` defaults with the 8B pattern) and of the Minitron 4B target widths (hidden 4096 -> 3072, FFN
21504 -> 12288, Mamba heads 128 -> 112), checked against the config class (peak prune memory is not measured here).

    python benchmarks/bench_hybrid_importance.py [--hidden 256 --batches 4 --seq 128 --repeats 3 --threads 2]
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
from hf_minitron.counting import count_parameters  # noqa: E402

NEMOTRON_H_8B_PATTERN = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
_KINDS = {"M": "linear_attention", "*": "full_attention", "-": "mlp"}


def pattern_list(pattern: str) -> list[str]:
    return [_KINDS[c] for c in pattern]


def build(args) -> torch.nn.Module:
    h = args.hidden
    config = AutoConfig.for_model(
        "nemotron_h",
        vocab_size=args.vocab,
        hidden_size=h,
        intermediate_size=h * 21504 // 4096,  # the 8B's FFN ratio
        num_hidden_layers=len(NEMOTRON_H_8B_PATTERN),
        layers_block_type=pattern_list(NEMOTRON_H_8B_PATTERN),
        num_attention_heads=h // 128 * 4 or 4,
        num_key_value_heads=max(1, (h // 128 * 4 or 4) // 4),
        head_dim=32,
        mamba_num_heads=h // 16,  # 8B: 128 heads x 64 = 2 x hidden, 16 heads per group
        mamba_head_dim=32,
        n_groups=2,
        ssm_state_size=32,
        chunk_size=64,
        max_position_embeddings=max(args.seq, 512),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


def published_shapes() -> dict:
    """Nemotron-H-8B from NemotronHConfig's defaults (hidden 4096, FFN 21504, 128 x 64 Mamba heads in 8 groups,
    32 / 8 attention heads of 128) with the 8B pattern, and the Minitron 4B target widths, counted on meta."""
    config = AutoConfig.for_model(
        "nemotron_h",
        layers_block_type=pattern_list(NEMOTRON_H_8B_PATTERN),
        num_hidden_layers=len(NEMOTRON_H_8B_PATTERN),
    )
    target = {"hidden_size": 3072, "intermediate_size": 12288, "mamba_num_heads": 112}
    PruningConfig(**target).validate_for(config)
    return {
        "source": {k: getattr(config, k) for k in ("hidden_size", "intermediate_size", "mamba_num_heads")},
        "source_params": count_parameters(config),
        "target": target,
        "target_params": count_parameters(config, target),
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=4096)
    add_calibration_args(p)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = build(args)
    batches = batches_for(args)
    c = model.config
    target = PruningConfig(
        hidden_size=c.hidden_size * 3 // 4,
        intermediate_size=c.intermediate_size // 2,
        mamba_num_heads=c.mamba_num_heads * 7 // 8,
        num_hidden_layers=c.num_hidden_layers - 4,
        importance="activation",
    )
    runs = {
        "plain_trunk": lambda: plain(model, batches, logits_to_keep=1),
        "plain_full_logits": lambda: plain(model, batches),
        "importance": lambda: estimate_importance(model, batches, target),
    }
    times, cpu = interleaved(runs, args.repeats)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratios = [i / t for i, t in zip(times["importance"], times["plain_trunk"])]
    cpu_ratios = [i / t for i, t in zip(cpu["importance"], cpu["plain_trunk"])]
    result = {
        "machine": f"CPU, torch threads={args.threads}",
        "model": {
            "pattern": NEMOTRON_H_8B_PATTERN,
            "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size,
            "mamba_num_heads": c.mamba_num_heads,
            "mamba_head_dim": c.mamba_head_dim,
            "n_groups": c.n_groups,
            "num_attention_heads": c.num_attention_heads,
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "batches": args.batches,
        "batch_size": args.batch_size,
        "seq": args.seq,
        "repeats": args.repeats,
        "seconds_median": medians,
        "times": times,
        "cpu_seconds_median": {k: statistics.median(v) for k, v in cpu.items()},
        "importance_over_plain_trunk_median": statistics.median(ratios),
        "importance_over_plain_trunk_runs": ratios,
        "importance_over_plain_trunk_cpu_median": statistics.median(cpu_ratios),
        "importance_over_plain_trunk_cpu_runs": cpu_ratios,
        "load_average_1min": os.getloadavg()[0],
        "nemotron_h_8b_to_4b_widths": published_shapes(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
