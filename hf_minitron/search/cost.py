"""Exact parameter counts and inference costs of pruned shapes, from configs only (no weights)."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping

import torch

# The config keys that a search may change, in the order the search uses them.
SHAPE_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "num_hidden_layers",
)
_WIDTH_KEYS = SHAPE_KEYS[:4]


def head_dim_of(config) -> int:
    """The attention head size of a config (explicit `head_dim`, else hidden / heads)."""
    head_dim = getattr(config, "head_dim", None)
    return int(head_dim) if head_dim else config.hidden_size // config.num_attention_heads


def shape_of(config) -> dict[str, int]:
    """The searchable dimensions of a transformers config."""
    shape = {key: int(getattr(config, key)) for key in SHAPE_KEYS}
    if getattr(config, "num_key_value_heads", None) is None:
        shape["num_key_value_heads"] = shape["num_attention_heads"]
    return shape


def pruned_config(model_config, shape: Mapping[str, int | None]):
    """A copy of `model_config` with the given dimensions (None = keep); `head_dim` is written explicitly.

    Per-layer lists (`layer_types`) are cut to the new depth, so `from_config` accepts the result.
    """
    config = copy.deepcopy(model_config)
    config.head_dim = head_dim_of(model_config)
    for key, value in shape.items():
        if value is not None:
            setattr(config, key, int(value))
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list | tuple) and len(layer_types) != config.num_hidden_layers:
        config.layer_types = list(layer_types)[: config.num_hidden_layers]
    return config


def _meta_model(config):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def count_parameters(model_config, shape: Mapping[str, int | None] | None = None) -> int:
    """Exact number of parameters of the model `from_config` builds (embeddings and `lm_head` included,
    tied weights counted once), optionally after changing the dimensions in `shape`.

    The model is instantiated on the meta device, so this costs no memory and takes milliseconds.
    """
    config = pruned_config(model_config, shape or {})
    return sum(p.numel() for p in _meta_model(config).parameters())


def _count_matmul_weights(config) -> int:
    """Weights of every `nn.Linear` (lm_head included, even when tied): the multiply-adds per token."""
    model = _meta_model(config)
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def _attention_context(config, seq_len: int) -> list[int]:
    """Number of cached key positions each layer attends to at `seq_len` (sliding-window layers cap it)."""
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
    per_layer = 2 * config.num_key_value_heads * head_dim_of(config) * dtype_bytes
    return float(sum(per_layer * ctx / seq_len for ctx in _attention_context(config, seq_len)))


def flops_per_token(model_config, seq_len: int = 4096, shape=None) -> int:
    """Forward FLOPs for one token with `seq_len` tokens of context.

    2 x (weights of every linear layer, `lm_head` included) for the matrix multiplies, plus
    4 x num_attention_heads x head_dim x context per layer for the attention scores and the weighted sum.
    """
    config = pruned_config(model_config, shape or {})
    attention = (
        4 * config.num_attention_heads * head_dim_of(config) * sum(_attention_context(config, seq_len))
    )
    return 2 * _count_matmul_weights(config) + attention


class CostModel:
    """Closed-form parameter and linear-weight counts over a grid of shapes, fitted exactly from the meta model.

    In every supported decoder, each layer's parameter count is multilinear in (hidden, MLP, query heads,
    KV heads) and the layers are identical, so count = outer(hidden) + layers x layer(hidden, MLP, heads, KV).
    The coefficients come from 32 meta instantiations (two values per dimension, one and two layers);
    `search` re-checks the chosen candidates with `count_parameters`, so a model that broke the assumption
    would be caught, not silently miscounted.
    """

    def __init__(self, model_config):
        self.model_config = model_config
        self.head_dim = head_dim_of(model_config)
        base = shape_of(model_config)
        # Two levels per width dimension, chosen so that every combination keeps GQA valid.
        self._levels = {
            "hidden_size": (base["hidden_size"], 2 * base["hidden_size"]),
            "intermediate_size": (base["intermediate_size"], 2 * base["intermediate_size"]),
            "num_attention_heads": (2, 4),
            "num_key_value_heads": (1, 2),
        }
        self._params = {}
        self._matmul = {}
        for corner in itertools.product((0, 1), repeat=4):
            width = {key: self._levels[key][bit] for key, bit in zip(_WIDTH_KEYS, corner)}
            counts = []
            for layers in (1, 2):
                config = pruned_config(model_config, {**width, "num_hidden_layers": layers})
                model = _meta_model(config)
                counts.append(
                    (
                        sum(p.numel() for p in model.parameters()),
                        sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)),
                    )
                )
            for i, table in enumerate((self._params, self._matmul)):
                per_layer = counts[1][i] - counts[0][i]
                table[corner] = (counts[0][i] - per_layer, per_layer)  # (outer, per layer)

    def _evaluate(self, table, hidden, intermediate, heads, kv_heads, layers):
        """Multilinear interpolation (exact for multilinear counts); numpy arrays broadcast."""
        values = (hidden, intermediate, heads, kv_heads)
        weights = []
        for key, value in zip(_WIDTH_KEYS, values):
            lo, hi = self._levels[key]
            t = (value - lo) / (hi - lo)
            weights.append((1 - t, t))
        total = 0.0
        for corner, (outer, per_layer) in table.items():
            w = 1.0
            for i, bit in enumerate(corner):
                w = w * weights[i][bit]
            total = total + w * (outer + layers * per_layer)
        return total

    def params(self, hidden, intermediate, heads, kv_heads, layers):
        """Parameter count (float; round it) for scalars or broadcastable numpy arrays."""
        return self._evaluate(self._params, hidden, intermediate, heads, kv_heads, layers)

    def flops(self, hidden, intermediate, heads, kv_heads, layers, seq_len: int):
        """Forward FLOPs per token (see `flops_per_token`), assuming every layer attends to `seq_len` keys
        scaled by the model's share of sliding-window layers."""
        contexts = _attention_context(self.model_config, seq_len)
        mean_context = sum(contexts) / len(contexts)
        matmul = self._evaluate(self._matmul, hidden, intermediate, heads, kv_heads, layers)
        return 2 * matmul + 4 * heads * self.head_dim * mean_context * layers

    def kv_bytes(self, kv_heads, layers, seq_len: int, dtype_bytes: int = 2):
        """KV-cache bytes per token (see `kv_cache_bytes_per_token`), sliding-window share as in the model."""
        contexts = _attention_context(self.model_config, seq_len)
        mean_share = sum(ctx / seq_len for ctx in contexts) / len(contexts)
        return 2 * kv_heads * self.head_dim * dtype_bytes * mean_share * layers


_COST_MODELS: dict[str, CostModel] = {}


def cost_model(model_config) -> CostModel:
    """A `CostModel` for this config, cached by the config's content."""
    key = model_config.to_json_string(use_diff=False)
    if key not in _COST_MODELS:
        _COST_MODELS[key] = CostModel(copy.deepcopy(model_config))
    return _COST_MODELS[key]
