"""OLMo Hybrid: Gated DeltaNet layers (pre-norm) and OLMo-3 style attention layers (post-norm, q/k norms over all
heads), one MLP each, told apart by `layer_types`."""

import dataclasses

from hf_minitron.architectures.deltanet import deltanet_heads, deltanet_hidden_slices
from hf_minitron.architectures.layout import decoder_groups, with_layer_kinds
from hf_minitron.architectures.spec import ArchitectureSpec, register

LINEAR, FULL = "linear_attention", "full_attention"


def _groups():
    """The OLMo 2 groups with per-kind norms and mixers; the channel observation skips norms a layer lacks."""
    groups = with_layer_kinds(
        decoder_groups(
            layer_norms=("input_layernorm", "post_attention_layernorm", "post_feedforward_layernorm"),
            full_width_head_norms=("q_norm", "k_norm"),
            extra_hidden_slices=deltanet_hidden_slices("model.layers", "linear_attn", "separate", "o_proj"),
        ),
        {
            "self_attn": (FULL,),
            "post_feedforward_layernorm": (FULL,),
            "linear_attn": (LINEAR,),
            "input_layernorm": (LINEAR,),
        },
    )
    return tuple(
        dataclasses.replace(g, observe=dataclasses.replace(g.observe, optional=True))
        if g.name == "channels"
        else g
        for g in groups
    )


OLMO_HYBRID = register(
    ArchitectureSpec(
        model_types=("olmo_hybrid",),
        groups=(*_groups(), deltanet_heads("linear_attn", (LINEAR,), "separate", out_proj="o_proj")),
        layer_kind_key="layer_types",
        supported_layer_kinds=(LINEAR, FULL),
        required_layer_kinds=(LINEAR, FULL),
        notes="DeltaNet q/k/v/g/a/b projections separate, output o_proj; its gated norm is per head (eps fixed at "
        "1e-5, kept). Attention layers are post-norm with q/k RMSNorms over all heads (sliced with the heads). The "
        "config class requires at least one layer of each kind.",
    )
)
