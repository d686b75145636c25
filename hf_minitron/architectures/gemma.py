"""Gemma and Gemma2: (1 + weight) RMSNorms, embeddings scaled by sqrt(hidden_size); Gemma2 adds sandwich norms."""

from hf_minitron.architectures.spec import ArchitectureSpec, register

_COMMON = dict(
    norm_weight_offset=1.0,
    embed_scale_from_hidden_size=True,
    embed_scale_attributes=("embed_scale", "scalar_embed_scale"),
)

GEMMA = register(ArchitectureSpec(model_types=("gemma",), **_COMMON))
GEMMA2 = register(
    ArchitectureSpec(
        model_types=("gemma2",),
        layer_norms=(
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ),
        notes="layer_types alternate sliding/full attention; query_pre_attn_scalar and softcaps do not depend on sizes.",
        **_COMMON,
    )
)
