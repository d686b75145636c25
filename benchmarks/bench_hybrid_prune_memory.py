"""Time and peak memory of `prune_model` on hybrid models with every axis cut at once (random init, bf16, CPU).

`bench_prune_memory.py` measures the Llama-shaped surgery and, for a hybrid, only hidden size, FFN and depth. This
one cuts every dimension group the family declares (Mamba-2 heads, attention heads, MLP neurons, hidden size,
experts, expert and shared-expert neurons) plus depth, from random scores, on three shapes:

- `nemotron_h`: Nemotron-H-8B's 52-layer pattern (24 Mamba-2, 4 attention, 24 MLP), narrow layers;
- `nemotron_h_moe`: Nemotron 3 Nano's 52-layer pattern (23 MoE, 23 Mamba-2, 6 attention), narrow, 32 experts;
- `falcon_h1`: attention, Mamba-2 and MLP in every layer (its `mup_vector` buffer recomputed).

The measurement runs in a fresh child process whose peak RSS is reset (Linux `/proc/self/clear_refs`) right before
`prune_model`; the goal is  peak RSS during pruning - RSS before the model existed <= 1.1 x (original + pruned
weights). Prints JSON.

    python benchmarks/bench_hybrid_prune_memory.py [--family nemotron_h|nemotron_h_moe|falcon_h1 --hidden 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import MiB, in_fresh_process, reset_peak, status_kib  # noqa: E402

NEMOTRON_H_8B = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
NEMOTRON_3_NANO = (
    "MEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEM*EMEMEMEM*EMEMEMEME"  # Megatron-Bridge Nemotron3NanoProvider
)
_KINDS = {"M": "linear_attention", "*": "full_attention", "-": "mlp", "E": "moe"}


def shape(family: str, h: int) -> tuple[str, dict, dict]:
    """(model_type, config, pruning targets) of a narrow model of the family at hidden size `h`."""
    common = dict(vocab_size=32000, hidden_size=h, num_attention_heads=h // 128, num_key_value_heads=max(1, h // 512),
                  head_dim=128, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)  # fmt: skip
    if family == "falcon_h1":
        config = dict(common, num_hidden_layers=24, intermediate_size=h * 4, mamba_d_ssm=h * 2, mamba_n_heads=h // 32,
                      mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128, mamba_rms_norm=True)  # fmt: skip
        heads = {"mamba_n_heads": h // 32 * 3 // 4}
        return "falcon_h1", config, {**heads, "intermediate_size": h * 3, "num_hidden_layers": 22}
    pattern = NEMOTRON_H_8B if family == "nemotron_h" else NEMOTRON_3_NANO
    config = dict(common, layers_block_type=[_KINDS[c] for c in pattern], intermediate_size=h * 21504 // 4096,
                  mamba_num_heads=h // 32, mamba_head_dim=64, n_groups=8, ssm_state_size=128)  # fmt: skip
    target = {
        "mamba_num_heads": h // 32 * 3 // 4,
        "intermediate_size": h * 12288 // 4096,
        "num_hidden_layers": 50,
    }
    if family == "nemotron_h_moe":
        config.update(n_routed_experts=32, num_experts_per_tok=4, moe_intermediate_size=h // 2,
                      moe_shared_expert_intermediate_size=h)  # fmt: skip
        target.update(
            num_local_experts=24, moe_intermediate_size=h * 3 // 8, moe_shared_expert_intermediate_size=h // 2
        )
    return "nemotron_h", config, target


def child(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from hf_minitron import ImportanceScores, PruningConfig, prune_model
    from hf_minitron.architectures import get_spec
    from hf_minitron.architectures.dimensions import unit_shape

    rss_empty = status_kib("VmRSS") * 1024
    model_type, values, targets = shape(args.family, args.hidden)
    config = AutoConfig.for_model(model_type, **values)
    start = time.perf_counter()
    with no_init_weights():  # allocate, then a cheap fill
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.02, 0.02)
    build_seconds = time.perf_counter() - start
    original_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    n_params = sum(p.numel() for p in model.parameters())
    target = PruningConfig(hidden_size=args.hidden * 3 // 4, num_key_value_heads=None, **targets)
    spec, current = get_spec(model), get_spec(model).shape(config)
    g = torch.Generator().manual_seed(0)
    n_layers = current["num_hidden_layers"]
    scores = {
        group.name: torch.rand(
            (n_layers, *unit_shape(group, current)) if group.scope == "layer" else unit_shape(group, current),
            generator=g,
        )
        for group in spec.groups
    }
    scores = ImportanceScores(
        layers=torch.rand(n_layers, generator=g), metadata={"depth_metric": "block_importance"}, **scores
    )
    rss_before = status_kib("VmRSS") * 1024
    reset = reset_peak()
    start = time.perf_counter()
    prune_model(model, target, scores)
    prune_seconds = time.perf_counter() - start
    peak = status_kib("VmHWM") * 1024
    pruned_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    budget = 1.1 * (original_bytes + pruned_bytes)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(model.config)
    return {
        "family": args.family,
        "model": {
            "params": n_params,
            "dtype": "bfloat16",
            **{k: v for k, v in values.items() if k != "vocab_size"},
        },
        "target": {k: v for k, v in target.to_dict().items() if v is not None and k in spec.size_keys},
        "pruned_params": sum(p.numel() for p in model.parameters()),
        "from_config_params_match": sum(p.numel() for p in fresh.parameters())
        == sum(p.numel() for p in model.parameters()),
        "build_seconds": round(build_seconds, 2),
        "prune_seconds": round(prune_seconds, 2),
        "original_MiB": round(original_bytes / MiB),
        "pruned_MiB": round(pruned_bytes / MiB),
        "peak_reset_before_prune": reset,
        "rss_before_prune_MiB": round(rss_before / MiB),
        "peak_minus_baseline_MiB": round((peak - rss_empty) / MiB),
        "goal_MiB (1.1 x (original + pruned))": round(budget / MiB),
        "within_goal": (peak - rss_empty) <= budget,
        "threads": args.threads,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="nemotron_h", choices=["nemotron_h", "nemotron_h_moe", "falcon_h1"])
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    result = child(args) if args.child else in_fresh_process(__file__, argv)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
