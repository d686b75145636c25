"""Qwen2 and Qwen3 (Qwen3 adds q/k RMSNorms over head_dim, which head_dim-preserving pruning leaves intact)."""

from hf_minitron.architectures.spec import ArchitectureSpec, register

QWEN = register(
    ArchitectureSpec(
        model_types=("qwen2", "qwen3"),
        layer_prefix_count_fields=("max_window_layers",),
        notes="Qwen2's q/k/v projections carry biases; they are sliced with their rows.",
    )
)
