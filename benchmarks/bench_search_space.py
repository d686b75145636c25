"""How long the search space takes on published shapes (config only, no weights): the closed-form counts over
the whole grid, then exact recounts of the chosen candidates. Prints JSON.

    python benchmarks/bench_search_space.py
"""

from __future__ import annotations

import json
import platform
import resource
import time

from transformers import LlamaConfig, NemotronHConfig, Qwen3MoeConfig

from hf_minitron.counting import CostModel, count_active_parameters, count_parameters
from hf_minitron.search import enumerate_candidates

# A Nemotron-H-8B-like hybrid: its published widths (hidden 4096, FFN 21504, 128 Mamba heads) with an illustrative
# 56-layer pattern (M: Mamba-2, *: attention, -: MLP), not the checkpoint's exact one. Llama 3.1 8B and
# Qwen3-30B-A3B are their published shapes (8.03B; 30.5B total, 3.3B active).
NEMOTRON_H_8B_PATTERN = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"

MODELS = {
    "llama-3.1-8b": LlamaConfig(
        vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
    ),
    "qwen3-30b-a3b": Qwen3MoeConfig(
        vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=48,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128, num_experts_per_tok=8,
        moe_intermediate_size=768, tie_word_embeddings=False,
    ),
    "nemotron-h-8b-shape": NemotronHConfig(
        vocab_size=131072, hidden_size=4096, intermediate_size=21504, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, mamba_num_heads=128, mamba_head_dim=64, n_groups=8,
        ssm_state_size=128, num_hidden_layers=len(NEMOTRON_H_8B_PATTERN),
        hybrid_override_pattern=NEMOTRON_H_8B_PATTERN,
    ),
}  # fmt: skip


def main() -> None:
    rows = []
    for name, config in MODELS.items():
        total, active = count_parameters(config), count_active_parameters(config)
        start = time.process_time()
        model = CostModel(config)
        fit = time.process_time() - start
        start = time.process_time()
        candidates = enumerate_candidates(config, total // 2, max_candidates=20)
        enumerate_s = time.process_time() - start
        rows.append(
            {
                "model": name,
                "params": total,
                "active_params": active,
                "layer_costs": len(model.classes),
                "cost_model_cpu_s": round(fit, 2),
                "enumerate_cpu_s": round(enumerate_s, 2),
                "candidates": len(candidates),
                "families": sorted({c.family for c in candidates}),
                "max_rel_error_of_budget": max(abs(c.params - total // 2) / (total // 2) for c in candidates),
            }
        )
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
                "budget": "target_params = 50% of the model, tolerance 5%, 20 candidates",
                "results": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
