"""Llama-like families that differ only in names, norms or an ungated MLP."""

from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

SMOLLM3 = register(
    ArchitectureSpec(
        model_types=("smollm3",),
        per_layer_config_lists=("layer_types", "no_rope_layers"),
        notes="no_rope_layers is one flag per layer, sliced with the kept layers.",
    )
)
HUNYUAN = register(
    ArchitectureSpec(model_types=("hunyuan_v1_dense",), notes="query/key layernorms over head_dim (kept).")
)
UNGATED = register(
    ArchitectureSpec(
        model_types=("arcee",),
        groups=decoder_groups(gate_proj=None),
        notes="Ungated ReLU^2 MLP (up_proj then down_proj).",
    )
)
APERTUS = register(
    ArchitectureSpec(
        model_types=("apertus",),
        groups=decoder_groups(gate_proj=None, layer_norms=("attention_layernorm", "feedforward_layernorm")),
        notes="Ungated xIELU MLP (its two scalars are per layer, not per neuron); q/k norms over head_dim.",
    )
)
COHERE = register(
    ArchitectureSpec(
        model_types=("cohere", "cohere2"),
        groups=decoder_groups(layer_norms=("input_layernorm",)),
        notes="Parallel block: attention and MLP read one LayerNorm; logit_scale is a scalar.",
    )
)
STABLELM = register(
    ArchitectureSpec(
        model_types=("stablelm",),
        heads_span_hidden=True,
        notes="LayerNorms with biases, sliced with the channels; head_dim = hidden_size // heads in its code.",
    )
)
STARCODER2 = register(
    ArchitectureSpec(
        model_types=("starcoder2",),
        groups=decoder_groups(gate_proj=None, up_proj="c_fc", down_proj="c_proj"),
        notes="Ungated GELU MLP with biases; every projection has a bias.",
    )
)
