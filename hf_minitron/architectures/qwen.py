"""Qwen2 and Qwen3 (Qwen3 adds q/k RMSNorms over head_dim, which head_dim-preserving pruning leaves intact)."""

from hf_minitron.architectures.spec import ArchitectureSpec, register

QWEN2 = register(
    ArchitectureSpec(
        model_types=("qwen2",),
        layer_prefix_count_fields=("max_window_layers",),
        notes="q/k/v projections carry biases; they are sliced with their rows.",
    )
)
QWEN3 = register(
    ArchitectureSpec(
        model_types=("qwen3",),
        head_norms=("self_attn.q_norm", "self_attn.k_norm"),
        layer_prefix_count_fields=("max_window_layers",),
    )
)
