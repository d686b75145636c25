"""Exact parameter counts and inference costs of pruned shapes, from configs only (no weights)."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from hf_minitron import polynomial as poly
from hf_minitron.architectures import get_spec
from hf_minitron.architectures.dimensions import applies, expand, rows_of
from hf_minitron.architectures.spec import text_config, with_values


def shape_of(config) -> dict[str, int]:
    """The prunable sizes of a config (every declared group's keys and the depth)."""
    spec = get_spec(config)
    shape = spec.shape(config)
    return {key: shape[key] for key in spec.size_keys if key in shape}


def head_dim_of(config) -> int:
    """The attention head size of a config (explicit `head_dim`, else hidden / heads)."""
    return get_spec(config).shape(config)["head_dim"]


def pruned_config(model_config, shape: Mapping[str, int | None], kept_layers: Sequence[int] | None = None):
    """A copy of `model_config` with the given sizes (None = keep) in its text part; `head_dim` explicit and
    the per-layer config cut to `kept_layers` (default: the first `num_hidden_layers`), so `from_config` accepts
    the result and builds the layers a pruned model keeps."""
    spec = get_spec(model_config)
    values = {k: int(v) for k, v in shape.items() if v is not None}
    head_dim = spec.shape(model_config).get("head_dim")
    if head_dim is not None:
        values["head_dim"] = head_dim
    text = text_config(model_config)
    if spec.derived_config_values is not None:  # e.g. Falcon-H1's mamba_d_ssm from the Mamba heads
        values.update(spec.derived_config_values(text, {**spec.shape(model_config), **values}))
    depth = values.get("num_hidden_layers", text.num_hidden_layers)
    if kept_layers is not None:
        if len(kept_layers) != depth:
            raise ValueError(
                f"kept_layers={list(kept_layers)} is invalid with num_hidden_layers={depth}: allowed {depth} indices"
            )
        values = {**spec.depth_values(model_config, list(kept_layers)), **values}
    else:
        for name in spec.per_layer_config_lists:
            current = getattr(text, name, None)
            if isinstance(current, (list, tuple)) and len(current) != depth:
                values[name] = list(current)[:depth]
    return with_values(model_config, values)


def _meta_model(config):
    """The model `from_config` builds, on the meta device, never inside DeepSpeed's `zero.Init`: while a ZeRO-3
    `TrainingArguments` is alive (a `--deepspeed` run's model card), `from_config` would partition the meta model and
    re-initialize its weights by copying out of meta, which fails."""
    with torch.device("meta"), _outside_zero3_init():
        return get_spec(config).model_class().from_config(config)


def _outside_zero3_init():
    """transformers' "zero.Init is already open" flag, so that `from_config` opens none (a no-op without it)."""
    try:
        from transformers.modeling_utils import set_zero3_state
    except ImportError:  # an older or newer transformers without the flag
        return contextlib.nullcontext()
    return set_zero3_state()


def count_parameters(
    model_config, shape: Mapping[str, int | None] | None = None, kept_layers: Sequence[int] | None = None
) -> int:
    """Exact number of parameters of the model `from_config` builds (embeddings and `lm_head` included,
    tied weights counted once, a composite checkpoint's other towers included), optionally after changing the
    sizes in `shape` (and keeping the source layers `kept_layers`, which matters when layers differ). The model
    is instantiated on the meta device: no memory, milliseconds."""
    config = pruned_config(model_config, shape or {}, kept_layers)
    return sum(p.numel() for p in _meta_model(config).parameters())


def count_active_parameters(
    model_config, shape: Mapping[str, int | None] | None = None, kept_layers: Sequence[int] | None = None
) -> int:
    """Parameters touched per token: `count_parameters`, less the experts a token is not routed to. In every
    mixture-of-experts layer only `num_experts_per_tok` of the experts run, so each tensor of the experts module
    (the module where a group bounded below by the experts per token is observed) counts k / E of its entries;
    routers, shared experts, attention, embeddings and `lm_head` count fully. Equal to `count_parameters` for a
    dense model."""
    config = pruned_config(model_config, shape or {}, kept_layers)
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


def _attention_layers(config) -> list[bool]:
    """Which layers have softmax attention (and a KV cache): all, or in a hybrid the kinds its heads live in."""
    spec = get_spec(config)
    n = text_config(config).num_hidden_layers
    kinds = spec.layer_kinds(config)
    heads = next((g for g in spec.groups if g.name == "heads"), None)
    if heads is None:
        return [False] * n
    return [kinds is None or applies(heads.layer_kinds, kinds[i]) for i in range(n)]


def _attention_context(config, seq_len: int) -> list[int]:
    """Number of cached key positions each layer attends to at `seq_len` (sliding-window layers cap it; layers
    without attention, such as a hybrid's Mamba layers, have none)."""
    attends = _attention_layers(config)
    config = text_config(config)
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    contexts = []
    for i in range(config.num_hidden_layers):
        sliding = window and (layer_types is None or layer_types[i] == "sliding_attention")
        if layer_types is None and window and getattr(config, "use_sliding_window", True) is False:
            sliding = False
        contexts.append((min(seq_len, int(window)) if sliding else seq_len) if attends[i] else 0)
    return contexts


def kv_cache_bytes_per_token(
    model_config, seq_len: int = 4096, dtype_bytes: int = 2, shape=None, kept_layers=None
) -> float:
    """KV-cache bytes each token occupies when the context holds `seq_len` tokens.

    Keys and values of every attention layer: 2 x num_key_value_heads x head_dim x `dtype_bytes`; a
    sliding-window layer only keeps `window` positions, so its share per token is window / seq_len when the
    window is shorter. A hybrid's Mamba / linear-attention layers keep a fixed-size state, not a per-token cache.
    """
    config = pruned_config(model_config, shape or {}, kept_layers)
    sizes = get_spec(config).shape(config)
    per_layer = 2 * sizes["num_key_value_heads"] * sizes["head_dim"] * dtype_bytes
    return float(sum(per_layer * ctx / seq_len for ctx in _attention_context(config, seq_len)))


def flops_per_token(model_config, seq_len: int = 4096, shape=None, kept_layers=None) -> int:
    """Forward FLOPs for one token with `seq_len` tokens of context.

    2 x (weights of every linear layer, `lm_head` included, and of the experts each token runs) for the matrix
    multiplies, plus
    4 x num_attention_heads x head_dim x context per attention layer for the attention scores and the weighted
    sum (a hybrid's SSM scan, linear in the state size, is not counted).
    """
    config = pruned_config(model_config, shape or {}, kept_layers)
    sizes = get_spec(config).shape(config)
    attention = (
        4 * sizes["num_attention_heads"] * sizes["head_dim"] * sum(_attention_context(config, seq_len))
    )
    return 2 * _count_matmul_weights(config) + attention


KeptLayers = Callable[[int], Sequence[int]]


@dataclass(frozen=True)
class _Costs:
    """Parameters, parameters a token touches, and matmul weights, as polynomials in the config sizes."""

    params: poly.Polynomial
    active: poly.Polynomial
    matmul: poly.Polynomial

    def key(self) -> tuple:
        return (poly.frozen(self.params), poly.frozen(self.active), poly.frozen(self.matmul))


def _declared_dims(spec, config, kinds: list[str] | None) -> dict[tuple[str, int], poly.Polynomial]:
    """(parameter name, dim) -> its size as a linear polynomial in the group sizes, for every declared slice."""
    text = text_config(config)
    n_layers = text.num_hidden_layers
    out: dict[tuple[str, int], poly.Polynomial] = {}
    owner: dict[tuple[str, int], str] = {}
    for group in spec.groups:
        keys = (
            dict(zip(("query", "kv"), group.config_keys)) if group.selection == "gqa" else {"unit": group.key}
        )
        for s in group.slices:
            coefficients: dict[str, float] = {}
            for seg in s.segments:
                coefficients[keys[seg.index]] = coefficients.get(keys[seg.index], 0) + rows_of(seg.rows, text)
            form = poly.linear(coefficients)
            if group.scope == "layer":
                names = [
                    f"{spec.layers_path}.{i}.{s.path}"
                    for i in range(n_layers)
                    if kinds is None
                    or (applies(group.layer_kinds, kinds[i]) and applies(s.layer_kinds, kinds[i]))
                ]
            else:
                names = expand(s.path, n_layers, kinds, s.layer_kinds)
            for name in names:
                if owner.setdefault((name, s.dim), group.name) != group.name:
                    raise ValueError(
                        f"{name} dim {s.dim} is declared by the groups {owner[name, s.dim]!r} and {group.name!r}: "
                        "allowed one group per tensor dim"
                    )
                out[(name, s.dim)] = form
    return out


class CostModel:
    """Exact parameter, active-parameter, FLOP and KV-cache counts over a grid of shapes, without building models.

    Every tensor a dimension group cuts has, along each cut dim, a size linear in the group's config values
    (the segments of the slice: heads x head_dim, 2 x expert width, ...); the other dims are fixed. So each
    tensor's size, and the model's count, is a polynomial in the sizes, read once from the spec and one meta model
    of the source config. Layers may differ (a mixture-of-experts model's dense and sparse layers, a hybrid's
    Mamba, attention and MLP layers): the count for a depth sums the polynomials of the layers kept, which
    `kept(n)` names (default: the first n, as `count_parameters` builds them). The search re-checks chosen
    candidates with `count_parameters`.
    """

    def __init__(self, model_config):
        self.model_config = model_config
        spec = get_spec(model_config)
        text = text_config(model_config)
        self.n_layers = text.num_hidden_layers
        self.base = spec.shape(model_config)
        self.head_dim = self.base.get("head_dim")
        kinds = spec.layer_kinds(model_config)
        dims = _declared_dims(spec, model_config, kinds)
        model = _meta_model(model_config)
        experts = {  # experts-module prefix -> (experts key, experts per token)
            f"{spec.layers_path}.{i}.{path}.": (group.key, int(getattr(text, group.lower_bound)))
            for group in spec.groups
            if group.lower_bound and group.scope == "layer"
            for path in group.observe.modules
            for i in range(self.n_layers)
        }
        layer_prefix = f"{spec.layers_path}."
        names: dict[int, list[str]] = {}
        tensors: dict[int, torch.nn.Parameter] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            names.setdefault(id(p), []).append(name)
            tensors[id(p)] = p
        linear_weights = [id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)]

        def size(pid: int) -> poly.Polynomial:
            out = poly.constant(1)
            for d, n in enumerate(tensors[pid].shape):
                form = next((dims[(a, d)] for a in names[pid] if (a, d) in dims), None)
                if form is None:
                    form = poly.constant(n)
                elif poly.evaluate(form, self.base) != n:
                    raise ValueError(
                        f"{names[pid][0]} dim {d} has {n} entries but its declared segments give "
                        f"{poly.evaluate(form, self.base):.0f}: the spec of {model_config.model_type} is inconsistent"
                    )
                out = poly.multiply(out, form)
            return out

        def layer_of(pid: int) -> int | None:
            for a in names[pid]:
                if a.startswith(layer_prefix):
                    return int(a[len(layer_prefix) :].split(".", 1)[0])
            return None

        def routed(pid: int, value: poly.Polynomial) -> poly.Polynomial | None:
            """`value` x k / E when the tensor belongs to an experts module (a token runs k of its E experts)."""
            for a in names[pid]:
                for prefix, (key, used) in experts.items():
                    if a.startswith(prefix):
                        return poly.times_power(value, key, -1, used)
            return None

        empty = lambda: {"params": {}, "active": {}, "matmul": {}}  # noqa: E731
        parts = {None: empty(), **{i: empty() for i in range(self.n_layers)}}
        for pid in tensors:
            value = size(pid)
            part = parts[layer_of(pid)]
            scaled = routed(pid, value)
            part["params"] = poly.add(part["params"], value)
            part["active"] = poly.add(part["active"], scaled if scaled is not None else value)
            if scaled is not None and tensors[pid].dim() == 3:
                part["matmul"] = poly.add(part["matmul"], scaled)
        for pid in linear_weights:  # every nn.Linear, a tied lm_head too (its multiply-adds run)
            part = parts[layer_of(pid)]
            part["matmul"] = poly.add(part["matmul"], size(pid))
        self.outer = _Costs(**parts.pop(None))
        per_layer = [_Costs(**parts[i]) for i in range(self.n_layers)]
        classes: dict[tuple, int] = {}
        self.layer_class = [classes.setdefault(c.key(), len(classes)) for c in per_layer]
        self.classes = [per_layer[self.layer_class.index(k)] for k in range(len(classes))]
        self.attends = _attention_layers(model_config)
        self.variables = set().union(*(poly.variables(c.params) for c in (self.outer, *self.classes)))

    @property
    def layers_differ(self) -> bool:
        """Whether layers have different costs (then which layers a depth keeps matters)."""
        return len(self.classes) > 1

    def _kept_table(self, kept: KeptLayers | None, weights) -> np.ndarray:
        """[depth + 1, len(weights[0])]: for each depth n, the sum over the kept layers of their weight rows."""
        weights = np.asarray(weights, dtype=np.float64)
        table = np.zeros((self.n_layers + 1, weights.shape[1]))
        for n in range(1, self.n_layers + 1):
            layers = range(n) if kept is None else kept(n)
            table[n] = weights[list(layers)].sum(0)
        return table

    def _evaluate(self, what: str, sizes: Mapping, kept: KeptLayers | None):
        values = {**self.base, **sizes}
        onehot = np.eye(len(self.classes))[self.layer_class]
        counts = self._kept_table(kept, onehot)[np.asarray(values["num_hidden_layers"])]
        total = poly.evaluate(getattr(self.outer, what), values)
        for c, costs in enumerate(self.classes):
            total = total + counts[..., c] * poly.evaluate(getattr(costs, what), values)
        return total

    def params(self, sizes: Mapping, kept: KeptLayers | None = None):
        """Parameter count (float; round it) for sizes keyed by config key, scalars or numpy arrays."""
        return self._evaluate("params", sizes, kept)

    def active_params(self, sizes: Mapping, kept: KeptLayers | None = None):
        """Parameters a token touches (see `count_active_parameters`)."""
        return self._evaluate("active", sizes, kept)

    def _context(self, seq_len: int, kept: KeptLayers | None, share: bool):
        contexts = np.asarray(_attention_context(self.model_config, seq_len), dtype=np.float64)
        return self._kept_table(kept, (contexts / seq_len if share else contexts)[:, None])[:, 0]

    def flops(self, sizes: Mapping, seq_len: int, kept: KeptLayers | None = None):
        """Forward FLOPs per token (see `flops_per_token`)."""
        values = {**self.base, **sizes}
        context = self._context(seq_len, kept, share=False)[np.asarray(values["num_hidden_layers"])]
        heads = values.get("num_attention_heads", 0)
        return 2 * self._evaluate("matmul", sizes, kept) + 4 * heads * (self.head_dim or 0) * context

    def kv_bytes(self, sizes: Mapping, seq_len: int, dtype_bytes: int = 2, kept: KeptLayers | None = None):
        """KV-cache bytes per token (see `kv_cache_bytes_per_token`)."""
        values = {**self.base, **sizes}
        share = self._context(seq_len, kept, share=True)[np.asarray(values["num_hidden_layers"])]
        kv = values.get("num_key_value_heads", 0)
        return 2 * kv * (self.head_dim or 0) * dtype_bytes * share


_COST_MODELS: dict[str, CostModel] = {}


def cost_model(model_config) -> CostModel:
    """A `CostModel` for this config, cached by the config's content."""
    key = model_config.to_json_string(use_diff=False)
    if key not in _COST_MODELS:
        _COST_MODELS[key] = CostModel(copy.deepcopy(model_config))
    return _COST_MODELS[key]
