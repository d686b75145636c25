"""Falcon-H1: every layer runs attention and a Mamba-2 mixer in parallel on one norm, then a gated MLP."""

from __future__ import annotations

from dataclasses import replace

from hf_minitron.architectures.layout import decoder_groups
from hf_minitron.architectures.mamba import mamba2_heads, mamba2_hidden_slices
from hf_minitron.architectures.spec import ArchitectureSpec, register


def _mup_vector(config):
    """The per-entry in_proj multipliers ([z | x | B | C | dt] segments): transformers' own function of the config,
    recomputed after pruning exactly as a reload does (the buffer is not saved)."""
    from transformers.models.falcon_h1.modeling_falcon_h1 import compute_mup_vector

    return compute_mup_vector(config)


def _mamba_width(text, values: dict) -> dict:
    """The Mamba width is `mamba_d_ssm` (or `mamba_expand * hidden_size` when unset): written explicitly so that
    pruning the hidden size alone keeps the mixer's width, and pruning heads shrinks it."""
    return {"mamba_d_ssm": values["mamba_n_heads"] * text.mamba_d_head}


def _mamba_group():
    group = mamba2_heads(
        "mamba",
        (),
        heads_key="mamba_n_heads",
        groups_key="mamba_n_groups",
        head_dim_key="mamba_d_head",
        state_key="mamba_d_state",
    )
    # the gated norm exists only with mamba_rms_norm=True (else nn.Identity); it computes its group size itself
    slices = tuple(replace(s, optional=True) if s.path == "mamba.norm.weight" else s for s in group.slices)
    attributes = (
        *(a for a in group.module_attributes if a[0] == "mamba"),
        ("mamba", "groups_time_state_size", lambda c: c.mamba_n_groups * c.mamba_d_state),
        ("mamba.norm", "n_groups", lambda c: c.mamba_n_groups),  # its groups (one head each may go)
        ("mamba", "mup_vector", _mup_vector),
    )
    return replace(group, slices=slices, module_attributes=attributes)


FALCON_H1 = register(
    ArchitectureSpec(
        model_types=("falcon_h1",),
        groups=(
            *decoder_groups(
                final_norm_path="model.final_layernorm",
                mlp="feed_forward",
                layer_norms=("input_layernorm", "pre_ff_layernorm"),
                extra_hidden_slices=mamba2_hidden_slices("model.layers", "mamba", ()),
            ),
            _mamba_group(),
        ),
        final_norm_path="model.final_layernorm",
        # layer_types is a read-only alias of layers_block_type ("hybrid" for every layer): nothing to slice
        per_layer_config_lists=(),
        fixed_keys=("mamba_n_groups",),
        derived_config_values=_mamba_width,
        notes=(
            "Every layer has the same three parts, so no layer pattern; mamba_d_ssm is rewritten as mamba_n_heads * "
            "mamba_d_head and the non-persistent mup_vector buffer (sized by the fused in_proj segments) is "
            "recomputed from the pruned config; the Mamba width is independent of hidden_size."
        ),
    )
)
