"""Depth pruning: choose the layers to keep, drop the others, renumber what depends on the layer index."""

from __future__ import annotations

import torch
from torch import nn


def layers_to_keep(
    n_layers: int, n_keep: int, scores: torch.Tensor | None, contiguous: bool, layers_to_drop=None
) -> list[int]:
    """Source indices of the kept layers: the complement of `layers_to_drop`, the `n_keep` best-scored layers,
    or (contiguous) everything but the window of `n_layers - n_keep` layers with the lowest worst score."""
    if layers_to_drop is not None:
        drop = set(layers_to_drop)
        return [i for i in range(n_layers) if i not in drop]
    if n_keep >= n_layers:
        return list(range(n_layers))
    if contiguous:
        block = n_layers - n_keep
        windows = [scores[s : s + block] for s in range(n_keep + 1)]
        start = min(range(len(windows)), key=lambda s: (float(windows[s].max()), float(windows[s].sum()), s))
        return [i for i in range(n_layers) if not start <= i < start + block]
    order = torch.sort(scores.float(), descending=True, stable=True).indices[:n_keep]
    return sorted(order.tolist())


def drop_layers(layers: nn.ModuleList, kept: list[int]) -> None:
    """Keep only `kept` layers (in order) and renumber every `layer_idx` attribute (KV-cache slots)."""
    if kept == list(range(len(layers))):
        return
    new = [layers[i] for i in kept]
    for i in reversed(range(len(layers))):
        del layers[i]
    layers.extend(new)
    for j, layer in enumerate(layers):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = j


def check_kept_layer_types(spec, config, kept: list[int], explicit: bool) -> None:
    """Refuse a depth cut that would leave a kind of layer the family requires, or (chosen by scores) a
    sliding/full model without full attention."""
    from hf_minitron.architectures.spec import text_config

    kinds = spec.layer_kinds(config)
    if kinds is not None and spec.required_layer_kinds:
        pattern = [kinds[i] for i in kept]
        missing = [k for k in spec.required_layer_kinds if k not in pattern]
        if missing:
            raise ValueError(
                f"{spec.layer_kind_key}={pattern} (after dropping layers "
                f"{[i for i in range(len(kinds)) if i not in kept]}) is invalid for {spec.model_types[0]}: allowed "
                f"a pattern with at least one layer of each kind {list(spec.required_layer_kinds)} (missing {missing})"
            )
    types = getattr(text_config(config), "layer_types", None)
    if explicit or not isinstance(types, (list, tuple)):
        return
    full = [i for i, t in enumerate(types) if t == spec.full_attention_type]
    if full and len(full) < len(types) and not any(i in full for i in kept):
        raise ValueError(
            f"num_hidden_layers={len(kept)} is invalid with these scores: they drop every full-attention layer "
            f"({full}); allowed a depth that keeps one, or name the layers explicitly with layers_to_drop"
        )
