"""Magnitude importance: weight norms along each unit's path, no data."""

from __future__ import annotations

import torch
from torch import nn

from hf_minitron.architectures import get_spec
from hf_minitron.architectures.dimensions import applies, expand, index_counts, per_unit, to_units, unit_shape
from hf_minitron.architectures.spec import text_config
from hf_minitron.importance.scores import ImportanceScores
from hf_minitron.importance.taylor import along, resolve


def _squared_norms(root, group, s, counts, config, shape, n_layers, kinds=None) -> dict[str, torch.Tensor]:
    """Per-unit squared L2 norms of one slice's 2-D weights, by role (the slice's paths summed)."""
    total = None
    for path in expand(s.path, n_layers, kinds, s.layer_kinds):
        param = resolve(root, path, s.optional)
        if param is None or param.dim() < 2:
            continue
        sq = along(param.detach().float() ** 2, s.dim, s.block_dim)
        parts = per_unit(sq, s.segments, counts, config, magnitude_only=True, grouped_by=s.grouped_by)
        for index, values in parts.items():
            units = to_units(group, index, values, shape)
            total = units if total is None else total + units
    return total


@torch.no_grad()
def estimate_magnitude_importance(model: nn.Module, config=None) -> ImportanceScores:
    """Importance from weight norms alone (no calibration data), higher = more important.

    - per-layer groups: the product of the unit's L2 norms in each of its weight tensors (an MLP neuron: its gate
      row x up row x down column; a query head: its output-projection columns x its KV group's value rows), so a
      unit with a zero block on its path scores 0;
    - model-wide groups (embedding channels): the L2 norm of what writes the channel (embedding column, o_proj
      and down_proj rows of every layer) x the L2 norm of what reads it (q/k/v and MLP input columns, lm_head);
    - layer: the L2 norm of its residual writers (o_proj and down_proj weights).

    Args:
        model (`nn.Module`): A supported transformers causal LM.
        config (`PruningConfig`, *optional*): Only recorded in the metadata.
    """
    spec = get_spec(model)
    cfg, shape = text_config(model.config), spec.shape(model.config)
    layers = spec.layers(model)
    n_layers = len(layers)
    scores = {}
    layer_scores = torch.zeros(n_layers)
    kinds = spec.layer_kinds(model.config)
    for group in spec.groups:
        counts = index_counts(group, shape)
        if group.scope == "layer":
            per_layer = []
            for i, layer in enumerate(layers):
                if kinds is not None and not applies(group.layer_kinds, kinds[i]):  # not in this hybrid layer
                    per_layer.append(torch.zeros(unit_shape(group, shape)))
                    continue
                score = torch.ones(unit_shape(group, shape))
                for s in group.slices:
                    sq = _squared_norms(layer, group, s, counts, cfg, shape, n_layers)
                    if sq is not None:
                        score = score * sq.sqrt()
                per_layer.append(score)
            scores[group.name] = torch.stack(per_layer)
        else:
            by_role = {"out": torch.zeros(shape[group.key]), "in": torch.zeros(shape[group.key])}
            for s in group.slices:
                sq = _squared_norms(model, group, s, counts, cfg, shape, n_layers, kinds)
                if sq is not None:
                    by_role[s.role] += sq
                if s.role == "out" and "*" in s.path:  # a layer's residual writers score the layer
                    for i in range(n_layers):
                        if kinds is not None and not applies(s.layer_kinds, kinds[i]):
                            continue
                        param = resolve(model, s.path.replace("*", str(i)), s.optional)
                        if param is not None and param.dim() >= 2:
                            layer_scores[i] += param.detach().float().pow(2).sum()
            scores[group.name] = by_role["out"].sqrt() * by_role["in"].sqrt()
    metadata = {"importance": "magnitude", "model_type": model.config.model_type, "num_samples": 0, **shape}
    if config is not None:
        metadata["depth_metric"] = "weight_norm"
    return ImportanceScores(metadata=metadata, layers=layer_scores.sqrt(), **scores)
