"""OLMo 2 and 3 (post-norm, q/k RMSNorms over all heads: sliced with the heads) and EXAONE 4 (post-norm)."""

from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.spec import ArchitectureSpec, register

_POST_NORMS = ("post_attention_layernorm", "post_feedforward_layernorm")

OLMO2 = register(
    ArchitectureSpec(
        model_types=("olmo2", "olmo3"),
        groups=decoder_groups(layer_norms=_POST_NORMS, full_width_head_norms=("q_norm", "k_norm")),
        notes="OLMo 3 alternates sliding and full attention in layer_types.",
    )
)
EXAONE4 = register(
    ArchitectureSpec(
        model_types=("exaone4",),
        groups=decoder_groups(layer_norms=_POST_NORMS),
        notes="q/k norms over head_dim (kept); sliding/full pattern in layer_types.",
    )
)
