"""Width pruning: MLP neurons per layer, attention heads per layer (GQA kept uniform), embedding channels."""

from __future__ import annotations

import math

import torch
from torch import nn

from hf_minitron.architectures import ArchitectureSpec
from hf_minitron.pruning.slicing import (
    head_rows,
    scale_norm_gain,
    slice_embedding,
    slice_linear,
    slice_norm,
    top_sorted,
)


def prune_neurons(spec: ArchitectureSpec, layer: nn.Module, scores: torch.Tensor, size: int) -> None:
    """Keep the `size` best-scored MLP neurons of one layer."""
    keep = top_sorted(scores, size)
    mlp = spec.mlp_module(layer)
    for name in spec.mlp_inputs:
        slice_linear(mlp.get_submodule(name), out_index=keep)
    slice_linear(mlp.get_submodule(spec.down_proj), in_index=keep)


def select_heads(
    scores: torch.Tensor, n_kv: int, new_q: int, new_kv: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept query heads, kept KV groups): the best `new_kv` groups by summed head score, then the best
    `new_q // new_kv` query heads within each kept group; all in original order."""
    per_group = scores.reshape(n_kv, -1)
    groups = top_sorted(per_group.sum(1), new_kv)
    r, new_r = per_group.shape[1], new_q // new_kv
    heads = torch.cat([g * r + top_sorted(per_group[g], new_r) for g in groups.tolist()])
    return heads, groups


def carry_over(o_proj: nn.Linear, scores: torch.Tensor, n_kv: int, new_r: int, head_dim: int) -> None:
    """P1's trick inside each KV group: with L heads ranked by score and K kept, kept head i (1-based rank,
    2K-L < i <= K) becomes head_i + (head_i - head_{2K-i+1}), on its output-projection columns."""
    per_group = scores.reshape(n_kv, -1)
    r = per_group.shape[1]
    w = o_proj.weight.detach()
    with torch.no_grad():
        for g in range(n_kv):
            ranked = (g * r + torch.sort(per_group[g], descending=True, stable=True).indices).tolist()
            for i in range(max(1, 2 * new_r - r + 1), new_r + 1):
                kept, pruned = ranked[i - 1], ranked[2 * new_r - i]
                cols_k, cols_p = (
                    slice(kept * head_dim, (kept + 1) * head_dim),
                    slice(pruned * head_dim, (pruned + 1) * head_dim),
                )
                w[:, cols_k] = 2 * w[:, cols_k] - w[:, cols_p]


def prune_heads(
    spec: ArchitectureSpec,
    layer: nn.Module,
    scores: torch.Tensor,
    n_kv: int,
    new_q: int,
    new_kv: int,
    head_dim: int,
    head_carry_over: bool,
) -> None:
    """Keep query heads and KV groups of one layer; `head_dim` is unchanged."""
    heads, groups = select_heads(scores, n_kv, new_q, new_kv)
    attn = spec.attn(layer)
    o_proj = attn.get_submodule(spec.o_proj)
    if head_carry_over:
        carry_over(o_proj, scores, n_kv, new_q // new_kv, head_dim)
    q_index, kv_index = head_rows(heads, head_dim), head_rows(groups, head_dim)
    slice_linear(attn.get_submodule(spec.q_proj), out_index=q_index)
    slice_linear(attn.get_submodule(spec.k_proj), out_index=kv_index)
    slice_linear(attn.get_submodule(spec.v_proj), out_index=kv_index)
    slice_linear(o_proj, in_index=q_index)


def prune_channels(spec: ArchitectureSpec, model: nn.Module, keep: torch.Tensor, tied: bool) -> None:
    """Keep embedding channels `keep` everywhere the residual stream is read or written."""
    old_size = spec.embed(model).weight.shape[1]
    embed = slice_embedding(spec.embed(model), keep)
    for layer in spec.layers(model):
        attn, mlp = spec.attn(layer), spec.mlp_module(layer)
        for name in (spec.q_proj, spec.k_proj, spec.v_proj):
            slice_linear(attn.get_submodule(name), in_index=keep)
        slice_linear(attn.get_submodule(spec.o_proj), out_index=keep)
        for name in spec.mlp_inputs:
            slice_linear(mlp.get_submodule(name), in_index=keep)
        slice_linear(mlp.get_submodule(spec.down_proj), out_index=keep)
        for norm in spec.norm_modules(layer):
            slice_norm(norm, keep)
    final_norm = slice_norm(spec.final_norm(model), keep)
    if spec.embed_scale_from_hidden_size:
        # The model multiplies embeddings by sqrt(hidden_size): keep the product the kept channels saw.
        factor = math.sqrt(old_size / len(keep))
        with torch.no_grad():
            embed.weight.mul_(factor)
        for name in spec.embed_scale_attributes:
            value = getattr(embed, name)
            new = math.sqrt(len(keep))
            setattr(embed, name, value.new_tensor(new) if isinstance(value, torch.Tensor) else new)
        if tied:  # the LM head shares the scaled rows: undo the factor in the final norm's gain
            scale_norm_gain(final_norm, 1.0 / factor, spec.norm_weight_offset)
    if tied:
        spec.lm_head(model).weight = embed.weight
    else:
        slice_linear(spec.lm_head(model), in_index=keep)
