"""GLM-4: fused `gate_up_proj`, q/k/v biases, four norms per layer."""

from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

GLM4 = register(
    ArchitectureSpec(
        model_types=("glm4",),
        groups=decoder_groups(
            gate_proj=None,
            up_proj=None,
            gate_up_proj="gate_up_proj",
            layer_norms=(
                "input_layernorm",
                "post_attention_layernorm",
                "post_self_attn_layernorm",
                "post_mlp_layernorm",
            ),
        ),
    )
)
