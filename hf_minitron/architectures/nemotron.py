"""Nemotron: ungated squared-ReLU MLP, LayerNorm1P (LayerNorm with bias computing x * (1 + weight))."""

from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

NEMOTRON = register(
    ArchitectureSpec(
        model_types=("nemotron",),
        groups=decoder_groups(gate_proj=None),
        norm_weight_offset=1.0,
        notes="LayerNorm1P's normalized_shape is updated with the hidden size; partial rotary is per head_dim.",
    )
)
