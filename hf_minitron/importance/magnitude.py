"""Magnitude importance: weight norms along each unit's path, no data."""

from __future__ import annotations

import torch
from torch import nn

from hf_minitron.architectures import get_spec
from hf_minitron.importance.scores import ImportanceScores


def _norms(weight: torch.Tensor, dim: int, groups: int | None = None) -> torch.Tensor:
    """L2 norms of `weight` ([out, in]) per output row (dim=0) or input column (dim=1), optionally per group
    of `groups` consecutive rows/columns."""
    w = weight.detach().float()
    if dim == 1:
        w = w.t()
    if groups is not None:
        w = w.reshape(groups, -1)
    return torch.linalg.vector_norm(w, dim=1)


def layer_modules(spec, layer: nn.Module) -> dict[str, nn.Linear]:
    """The projections of one decoder layer by role: q, k, v, o, the MLP inputs (gate first), down."""
    attn, mlp = spec.attn(layer), spec.mlp_module(layer)
    modules = {name: attn.get_submodule(getattr(spec, f"{name}_proj")) for name in ("q", "k", "v", "o")}
    modules["mlp_inputs"] = [mlp.get_submodule(name) for name in spec.mlp_inputs]
    modules["down"] = mlp.get_submodule(spec.down_proj)
    return modules


@torch.no_grad()
def estimate_magnitude_importance(model: nn.Module, config=None) -> ImportanceScores:
    """Importance from weight norms alone (no calibration data), higher = more important.

    - neuron j: product of the L2 norms of its rows in the MLP input projections (gate, up) and of its column in
      the down projection (a neuron whose path has a zero weight block scores 0);
    - query head i: L2 norm of its output-projection columns x L2 norm of its KV group's value rows;
    - embedding channel c: L2 norm of what writes it (embedding column, o_proj and down_proj rows of every
      layer) x L2 norm of what reads it (q/k/v and MLP input columns of every layer, lm_head column);
    - layer: L2 norm of its residual writers (o_proj and down_proj weights).

    Args:
        model (`nn.Module`): A supported transformers causal LM.
        config (`PruningConfig`, *optional*): Only recorded in the metadata.
    """
    spec = get_spec(model)
    mc = model.config
    layers = spec.layers(model)
    n_q = mc.num_attention_heads
    n_kv = getattr(mc, "num_key_value_heads", None) or n_q
    neurons, heads, layers_score = [], [], []
    writers = _norms(spec.embed(model).weight, dim=1) ** 2
    readers = _norms(spec.lm_head(model).weight, dim=1) ** 2
    for layer in layers:
        m = layer_modules(spec, layer)
        neuron = _norms(m["down"].weight, dim=1)
        for proj in m["mlp_inputs"]:
            neuron = neuron * _norms(proj.weight, dim=0)
        neurons.append(neuron)
        values = _norms(m["v"].weight, dim=0, groups=n_kv).repeat_interleave(n_q // n_kv)
        heads.append(_norms(m["o"].weight, dim=1, groups=n_q) * values)
        writers += _norms(m["o"].weight, dim=0) ** 2 + _norms(m["down"].weight, dim=0) ** 2
        for proj in (m["q"], m["k"], m["v"], *m["mlp_inputs"]):
            readers += _norms(proj.weight, dim=1) ** 2
        o, down = m["o"].weight.detach().float(), m["down"].weight.detach().float()
        layers_score.append(torch.sqrt(o.pow(2).sum() + down.pow(2).sum()))
    metadata = {
        "importance": "magnitude",
        "model_type": mc.model_type,
        "num_samples": 0,
        "num_hidden_layers": len(layers),
        "hidden_size": mc.hidden_size,
        "intermediate_size": mc.intermediate_size,
        "num_attention_heads": n_q,
        "num_key_value_heads": n_kv,
    }
    if config is not None:
        metadata["depth_metric"] = "weight_norm"
    return ImportanceScores(
        neurons=torch.stack(neurons),
        heads=torch.stack(heads),
        channels=writers.sqrt() * readers.sqrt(),
        layers=torch.stack(layers_score),
        metadata=metadata,
    )
