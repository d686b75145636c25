"""Exact parameter counts and inference costs of pruned shapes, from configs only (no weights)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping

import torch

from hf_minitron.architectures import get_spec
from hf_minitron.architectures.spec import text_config, with_values


def shape_of(config) -> dict[str, int]:
    """The prunable sizes of a config (every declared group's keys and the depth)."""
    spec = get_spec(config)
    shape = spec.shape(config)
    return {key: shape[key] for key in spec.size_keys if key in shape}


def head_dim_of(config) -> int:
    """The attention head size of a config (explicit `head_dim`, else hidden / heads)."""
    return get_spec(config).shape(config)["head_dim"]


def pruned_config(model_config, shape: Mapping[str, int | None]):
    """A copy of `model_config` with the given sizes (None = keep) in its text part; `head_dim` explicit and
    per-layer lists cut to the new depth, so `from_config` accepts the result."""
    spec = get_spec(model_config)
    values = {k: int(v) for k, v in shape.items() if v is not None}
    head_dim = spec.shape(model_config).get("head_dim")
    if head_dim is not None:
        values["head_dim"] = head_dim
    text = text_config(model_config)
    depth = values.get("num_hidden_layers", text.num_hidden_layers)
    for name in spec.per_layer_config_lists:
        current = getattr(text, name, None)
        if isinstance(current, (list, tuple)) and len(current) != depth:
            values[name] = list(current)[:depth]
    return with_values(model_config, values)


def _meta_model(config):
    with torch.device("meta"):
        return get_spec(config).model_class().from_config(config)


def count_parameters(model_config, shape: Mapping[str, int | None] | None = None) -> int:
    """Exact number of parameters of the model `from_config` builds (embeddings and `lm_head` included,
    tied weights counted once, a composite checkpoint's other towers included), optionally after changing the
    sizes in `shape`. The model is instantiated on the meta device: no memory, milliseconds."""
    config = pruned_config(model_config, shape or {})
    return sum(p.numel() for p in _meta_model(config).parameters())


def count_active_parameters(model_config, shape: Mapping[str, int | None] | None = None) -> int:
    """Parameters touched per token: `count_parameters`, less the experts a token is not routed to. In every
    mixture-of-experts layer only `num_experts_per_tok` of the experts run, so each tensor of the experts module
    (the module where a group bounded below by the experts per token is observed) counts k / E of its entries;
    routers, shared experts, attention, embeddings and `lm_head` count fully. Equal to `count_parameters` for a
    dense model."""
    config = pruned_config(model_config, shape or {})
    model = _meta_model(config)
    total = sum(p.numel() for p in model.parameters())
    for module, experts, used in _experts_modules(model, config):
        routed = sum(p.numel() for p in module.parameters())
        total -= routed - routed * used // experts
    return total


def _experts_modules(model, config) -> list[tuple[torch.nn.Module, int, int]]:
    """(experts module, experts, experts per token) of every MoE layer: where a group bounded below by the
    experts per token is observed."""
    spec = get_spec(config)
    sizes = spec.shape(config)
    out = []
    for group in spec.groups:
        if not group.lower_bound or group.scope != "layer":
            continue
        for layer in spec.layers(model):
            for path in group.observe.modules:
                try:
                    out.append((layer.get_submodule(path), sizes[group.key], sizes[group.lower_bound]))
                except AttributeError:  # a dense layer
                    continue
    return out


def _count_matmul_weights(config) -> int:
    """Weights of every `nn.Linear` (lm_head included, even when tied), plus the 3D expert matrices a token
    runs (k / E of them): the multiply-adds per token."""
    model = _meta_model(config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    for module, experts, used in _experts_modules(model, config):
        matrices = sum(p.numel() for p in module.parameters() if p.dim() == 3)
        linear += matrices * used // experts
    return linear


def _attention_context(config, seq_len: int) -> list[int]:
    """Number of cached key positions each layer attends to at `seq_len` (sliding-window layers cap it)."""
    config = text_config(config)
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    contexts = []
    for i in range(config.num_hidden_layers):
        sliding = window and (layer_types is None or layer_types[i] == "sliding_attention")
        if layer_types is None and window and getattr(config, "use_sliding_window", True) is False:
            sliding = False
        contexts.append(min(seq_len, int(window)) if sliding else seq_len)
    return contexts


def kv_cache_bytes_per_token(model_config, seq_len: int = 4096, dtype_bytes: int = 2, shape=None) -> float:
    """KV-cache bytes each token occupies when the context holds `seq_len` tokens.

    Keys and values of every layer: 2 x num_key_value_heads x head_dim x `dtype_bytes`; a sliding-window
    layer only keeps `window` positions, so its share per token is window / seq_len when the window is shorter.
    """
    config = pruned_config(model_config, shape or {})
    sizes = get_spec(config).shape(config)
    per_layer = 2 * sizes["num_key_value_heads"] * sizes["head_dim"] * dtype_bytes
    return float(sum(per_layer * ctx / seq_len for ctx in _attention_context(config, seq_len)))


def flops_per_token(model_config, seq_len: int = 4096, shape=None) -> int:
    """Forward FLOPs for one token with `seq_len` tokens of context.

    2 x (weights of every linear layer, `lm_head` included, and of the experts each token runs) for the matrix
    multiplies, plus
    4 x num_attention_heads x head_dim x context per layer for the attention scores and the weighted sum.
    """
    config = pruned_config(model_config, shape or {})
    sizes = get_spec(config).shape(config)
    attention = (
        4 * sizes["num_attention_heads"] * sizes["head_dim"] * sum(_attention_context(config, seq_len))
    )
    return 2 * _count_matmul_weights(config) + attention


_NODES = (1, 2, 3)  # interpolation nodes per width, in units of a base value


def _lagrange(x, nodes) -> list:
    """Lagrange basis values at `x` (scalar or array) for three nodes."""
    out = []
    for i, xi in enumerate(nodes):
        w = 1.0
        for j, xj in enumerate(nodes):
            if j != i:
                w = w * (x - xj) / (xi - xj)
        out.append(w)
    return out


class CostModel:
    """Closed-form parameter and linear-weight counts over a grid of shapes, fitted exactly from the meta model.

    In every supported decoder, each layer's parameter count is a polynomial of degree at most 2 in each
    declared width (bilinear terms like hidden x heads, and hidden x hidden where attention is hidden-wide) and
    the layers are identical, so count = outer(widths) + layers x layer(widths). The coefficients come from
    3^(widths) x 2 meta instantiations (three values per width, one and two layers); the search re-checks the
    chosen candidates with `count_parameters`, so a model that broke the assumption would be caught.
    """

    def __init__(self, model_config):
        self.model_config = model_config
        spec = get_spec(model_config)
        routed = [g.name for g in spec.groups if g.within or g.lower_bound]
        if (
            routed
        ):  # layers differ (dense / sparse) and 3^(widths) corners grow too many: not interpolated yet
            raise ValueError(
                f"the architecture search is not supported for {type(text_config(model_config)).__name__} yet: "
                f"its {routed} groups are not in the closed-form cost model; allowed explicit sizes or "
                "PruningConfig(target_params=..., target_active_params=...) (exact expert budgets)"
            )
        base = spec.shape(model_config)
        self.head_dim = base.get("head_dim")
        self.width_keys = tuple(k for k in spec.size_keys if k != "num_hidden_layers")
        # Three levels per width, chosen so that every combination keeps GQA divisible.
        self._levels = {}
        for group in spec.groups:
            if group.selection == "gqa":
                self._levels.update(zip(group.config_keys, ((4, 8, 16), (1, 2, 4))))
            else:
                self._levels.update({k: tuple(n * base[k] for n in _NODES) for k in group.config_keys})
        self._params, self._matmul = {}, {}
        for corner in itertools.product(range(len(_NODES)), repeat=len(self.width_keys)):
            width = {key: self._levels[key][bit] for key, bit in zip(self.width_keys, corner)}
            counts = []
            for layers in (1, 2):
                model = _meta_model(pruned_config(model_config, {**width, "num_hidden_layers": layers}))
                counts.append(
                    (
                        sum(p.numel() for p in model.parameters()),
                        sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
                    )
                )
            for i, table in enumerate((self._params, self._matmul)):
                per_layer = counts[1][i] - counts[0][i]
                table[corner] = (counts[0][i] - per_layer, per_layer)  # (outer, per layer)

    def _evaluate(self, table, sizes: Mapping):
        """Tensor-product quadratic interpolation (exact for the counts above); numpy arrays broadcast."""
        weights = [_lagrange(sizes[key], self._levels[key]) for key in self.width_keys]
        total = 0.0
        for corner, (outer, per_layer) in table.items():
            w = 1.0
            for i, bit in enumerate(corner):
                w = w * weights[i][bit]
            total = total + w * (outer + sizes["num_hidden_layers"] * per_layer)
        return total

    def params(self, sizes: Mapping):
        """Parameter count (float; round it) for sizes keyed by config key, scalars or numpy arrays."""
        return self._evaluate(self._params, sizes)

    def flops(self, sizes: Mapping, seq_len: int):
        """Forward FLOPs per token (see `flops_per_token`), every layer attending to `seq_len` keys scaled by the
        model's share of sliding-window layers."""
        contexts = _attention_context(self.model_config, seq_len)
        mean_context = sum(contexts) / len(contexts)
        matmul = self._evaluate(self._matmul, sizes)
        heads = sizes.get("num_attention_heads", 0)
        return 2 * matmul + 4 * heads * (self.head_dim or 0) * mean_context * sizes["num_hidden_layers"]

    def kv_bytes(self, sizes: Mapping, seq_len: int, dtype_bytes: int = 2):
        """KV-cache bytes per token (see `kv_cache_bytes_per_token`), sliding-window share as in the model."""
        contexts = _attention_context(self.model_config, seq_len)
        mean_share = sum(ctx / seq_len for ctx in contexts) / len(contexts)
        kv = sizes.get("num_key_value_heads", 0)
        return 2 * kv * (self.head_dim or 0) * dtype_bytes * mean_share * sizes["num_hidden_layers"]


_COST_MODELS: dict[str, CostModel] = {}


def cost_model(model_config) -> CostModel:
    """A `CostModel` for this config, cached by the config's content."""
    spec = get_spec(model_config)
    if spec.layer_kind_key is not None:  # the fit assumes identical layers; a hybrid's depth changes its mix
        raise ValueError(
            f"target_params (and the architecture search) for model_type={model_config.model_type!r} is "
            f"not supported yet: its layers differ by kind ({spec.layer_kind_key}); allowed explicit sizes "
            f"({', '.join(spec.size_keys)})"
        )
    key = model_config.to_json_string(use_diff=False)
    if key not in _COST_MODELS:
        _COST_MODELS[key] = CostModel(copy.deepcopy(model_config))
    return _COST_MODELS[key]
