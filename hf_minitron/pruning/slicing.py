"""Slicing of Linear / Embedding / norm modules: new Parameters hold only the kept entries (dtype, device and
requires_grad kept); the old tensors are released as soon as nothing else refers to them."""

from __future__ import annotations

import torch
from torch import nn


def _select(tensor: torch.Tensor, dim: int, index: torch.Tensor) -> torch.Tensor:
    return tensor.detach().index_select(dim, index.to(tensor.device))


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))


def slice_linear(
    linear: nn.Linear, out_index: torch.Tensor | None = None, in_index: torch.Tensor | None = None
):
    """Keep output rows `out_index` and input columns `in_index` of a Linear (bias follows the rows)."""
    if out_index is not None:
        _replace(linear, "weight", _select(linear.weight, 0, out_index))
        if linear.bias is not None:
            _replace(linear, "bias", _select(linear.bias, 0, out_index))
    if in_index is not None:
        _replace(linear, "weight", _select(linear.weight, 1, in_index))
    linear.out_features, linear.in_features = linear.weight.shape
    return linear


def slice_embedding(embedding: nn.Embedding, index: torch.Tensor) -> nn.Embedding:
    """Keep embedding channels (columns) `index`."""
    _replace(embedding, "weight", _select(embedding.weight, 1, index))
    embedding.embedding_dim = embedding.weight.shape[1]
    return embedding


def slice_norm(norm: nn.Module, index: torch.Tensor) -> nn.Module:
    """Keep channels `index` of a norm's weight and bias; LayerNorm-style `normalized_shape` follows."""
    for name in ("weight", "bias"):
        if getattr(norm, name, None) is not None:
            _replace(norm, name, _select(getattr(norm, name), 0, index))
    if hasattr(norm, "normalized_shape"):
        norm.normalized_shape = (len(index),)
    return norm


def scale_norm_gain(norm: nn.Module, factor: float, weight_offset: float) -> nn.Module:
    """Multiply a norm's effective gain `(weight_offset + weight)` and its bias by `factor`."""
    with torch.no_grad():
        norm.weight.copy_((weight_offset + norm.weight.float()) * factor - weight_offset)
        if getattr(norm, "bias", None) is not None:
            norm.bias.mul_(factor)
    return norm


def head_rows(heads: torch.Tensor, head_dim: int) -> torch.Tensor:
    """Row (or column) indices of the given heads in a projection laid out as [heads * head_dim]."""
    return (heads.unsqueeze(1) * head_dim + torch.arange(head_dim)).reshape(-1)


def top_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the `k` highest scores, in their original order (ties: lower index first)."""
    order = torch.sort(scores.float(), descending=True, stable=True).indices[:k]
    return order.sort().values
