"""Phi-3 (fused `qkv_proj` rows [q | k | v] and `gate_up_proj` rows [gate | up]) and Phi (parallel block)."""

from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

PHI3 = register(
    ArchitectureSpec(
        model_types=("phi3",),
        groups=decoder_groups(
            q_proj=None,
            k_proj=None,
            v_proj=None,
            qkv_proj="qkv_proj",
            gate_proj=None,
            up_proj=None,
            gate_up_proj="gate_up_proj",
        ),
        notes="LongRoPE factor lists are tied to hidden_size // num_attention_heads: the config class refuses "
        "shapes that change it, and prune_model says so before surgery.",
    )
)
PHI = register(
    ArchitectureSpec(
        model_types=("phi",),
        groups=decoder_groups(
            o_proj="dense",
            gate_proj=None,
            up_proj="fc1",
            down_proj="fc2",
            layer_norms=("input_layernorm",),
            final_norm_path="model.final_layernorm",
        ),
        final_norm_path="model.final_layernorm",
        notes="Attention and MLP read one LayerNorm in parallel; the LM head has a bias (vocabulary-sized, kept).",
    )
)
