"""`ArchitectureSpec`: everything hf-minitron knows about a model family, as data, keyed by `model_type`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from hf_minitron.architectures.dimensions import DimensionGroup, applies, expand
from hf_minitron.architectures.layout import decoder_groups

_REGISTRY: dict[str, ArchitectureSpec] = {}

# Integer attributes that transformers modules cache from the config, and the config key each one mirrors.
MODULE_SIZE_ATTRIBUTES = {
    "hidden_size": "hidden_size",
    "intermediate_size": "intermediate_size",
    "num_heads": "num_attention_heads",
    "num_attention_heads": "num_attention_heads",
    "num_key_value_heads": "num_key_value_heads",
}


@dataclass(frozen=True)
class ArchitectureSpec:
    """
    A decoder-only causal LM family as data. Paths are relative to the model that `auto_class` builds.

    Args:
        model_types (`tuple[str, ...]`): `config.model_type` values this spec covers.
        groups (`tuple[DimensionGroup, ...]`): The prunable width dimensions (see `decoder_groups` for the
            Llama layout); depth is handled for every family by dropping whole layers.
        layers_path (`str`): The `nn.ModuleList` of decoder layers.
        embed_path, final_norm_path, lm_head_path (`str`): Token embedding, final norm, output projection.
        norm_weight_offset (`float`): 1.0 when a norm computes `x * (1 + weight)` (Gemma, Nemotron's
            LayerNorm1P), else 0.0.
        embed_scale_from_hidden_size (`bool`): The model multiplies embeddings by `sqrt(hidden_size)`. Pruning the
            hidden size to H' would change that factor, so the embedding rows are multiplied by `sqrt(H/H')` and
            the module's scale set to `sqrt(H')`; with tied embeddings the final norm's gain undoes the factor on
            the LM head.
        embed_scale_attributes (`tuple[str, ...]`): Attributes of the embedding module holding that scale.
        per_layer_config_lists (`tuple[str, ...]`): Config lists with one entry per layer (sliced when dropping).
        layer_prefix_count_fields (`tuple[str, ...]`): Config ints meaning "the first N layers" (recounted).
        layer_index_lists (`tuple[str, ...]`): Config lists of layer indices (remapped when dropping).
        full_attention_type (`str`): The `layer_types` entry of a full-attention layer; depth pruning refuses to
            drop all of them unless the layers are named explicitly.
        heads_span_hidden (`bool`): The modeling code sizes attention as `hidden_size` wide (`o_proj` is
            hidden x hidden, or `head_dim = hidden_size // heads`), so `num_attention_heads * head_dim` must stay
            equal to `hidden_size`: heads and hidden size are pruned together or not at all.
        module_size_attributes (`tuple[tuple[str, str], ...]`): Extra (module attribute, config key) pairs that
            modules cache (an experts module's `num_experts`, `intermediate_dim`), refreshed after pruning.
        layer_pattern_values (`Callable`, *optional*): `(text_config, kept_layers) -> dict` of config values that
            describe which kept layer is which kind when the family derives it from the index (Qwen-MoE's
            `decoder_sparse_step`), written with the pruned sizes.
        rescale_norms (`bool`): The default of `PruningConfig.rescale_norms` for this family (measured on real
            checkpoints, with the fixed and the data-aware factor: on for Qwen2.5, off for Gemma 3).
        auto_class (`str`): The transformers Auto class that loads the whole checkpoint.
        layer_kind_key (`str`, *optional*): A hybrid model's config pattern of layer kinds (a list with one entry
            per layer, or a string with one character per layer); groups and slices with `layer_kinds` apply only
            to the layers of those kinds. Depth pruning slices it like the other per-layer lists.
        supported_layer_kinds (`tuple[str, ...]`, defaults to `()`): The layer kinds the groups describe; a model
            with another kind is refused before surgery (empty: no check).
        required_layer_kinds (`tuple[str, ...]`, defaults to `()`): Layer kinds of which the modeling code needs at
            least one (Qwen3-Next's cache has no sequence length without a full-attention layer): a depth cut that
            would leave none is refused naming the pattern field, even when the layers are named explicitly.
        fixed_keys (`tuple[str, ...]`, defaults to `()`): Config keys of a group that must keep their value
            (Mamba-2 `n_groups`: the grouped norm and B/C stay whole), except a GQA group's KV key when every KV
            unit holds one unit (`n_groups == mamba_num_heads`): the groups are then pruned with their heads.
        inner_width_tie (`tuple[str, str, str]`, *optional*): (heads key, head size key, expansion key) when the
            config class requires heads x head size == expansion x `hidden_size` (Bamba, Granite 4's Mamba width):
            the heads are then pruned only with the hidden size, in proportion.
        unsupported_nonzero_keys (`tuple[str, ...]`, defaults to `()`): Config keys whose non-zero value means a
            part the groups do not describe (Granite 4's routed experts): such a model is refused before surgery.
        required_values (`tuple[tuple[str, object], ...]`, defaults to `()`): (config key, value) pairs the groups
            assume (GLM-4-MoE: one expert group, no group-limited routing); a model with another
            value is refused before surgery.
        derived_config_values (`Callable`, *optional*): `(text_config, values) -> dict` of config entries computed
            from the pruned sizes `values` (Falcon-H1's `mamba_d_ssm = mamba_n_heads * mamba_d_head`), written with
            them.
        notes (`str`): Anything else worth knowing (kept in one place rather than in code branches).
    """

    model_types: tuple[str, ...]
    groups: tuple[DimensionGroup, ...] = field(default_factory=decoder_groups)
    layers_path: str = "model.layers"
    embed_path: str = "model.embed_tokens"
    final_norm_path: str = "model.norm"
    lm_head_path: str = "lm_head"
    norm_weight_offset: float = 0.0
    embed_scale_from_hidden_size: bool = False
    embed_scale_attributes: tuple[str, ...] = ()
    per_layer_config_lists: tuple[str, ...] = ("layer_types",)
    layer_prefix_count_fields: tuple[str, ...] = ()
    layer_index_lists: tuple[str, ...] = ()
    full_attention_type: str = "full_attention"
    heads_span_hidden: bool = False
    module_size_attributes: tuple[tuple[str, str], ...] = ()
    layer_pattern_values: Callable | None = None
    rescale_norms: bool = True
    auto_class: str = "AutoModelForCausalLM"
    layer_kind_key: str | None = None
    supported_layer_kinds: tuple[str, ...] = ()
    required_layer_kinds: tuple[str, ...] = ()
    fixed_keys: tuple[str, ...] = ()
    inner_width_tie: tuple[str, str, str] | None = None
    unsupported_nonzero_keys: tuple[str, ...] = ()
    required_values: tuple[tuple[str, object], ...] = ()
    derived_config_values: Callable | None = None
    notes: str = ""

    # ------------------------------------------------------------------ accessors
    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def embed(self, model: nn.Module) -> nn.Embedding:
        return model.get_submodule(self.embed_path)

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.final_norm_path)

    def lm_head(self, model: nn.Module) -> nn.Linear:
        return model.get_submodule(self.lm_head_path)

    def group(self, name: str) -> DimensionGroup:
        """The dimension group scored under `name`."""
        for g in self.groups:
            if g.name == name:
                return g
        raise ValueError(f"group={name!r} is invalid: allowed one of {[g.name for g in self.groups]}")

    @property
    def size_keys(self) -> tuple[str, ...]:
        """Every config key a pruning target can set: each group's, then the depth."""
        return (*(k for g in self.groups for k in g.config_keys), "num_hidden_layers")

    def shape(self, config) -> dict[str, int]:
        """The prunable sizes of a (possibly composite) config, and `head_dim`: the one shape summary."""
        text = text_config(config)
        shape = {
            key: int(getattr(text, key)) for key in self.size_keys if getattr(text, key, None) is not None
        }
        if "num_attention_heads" in shape:
            shape.setdefault("num_key_value_heads", shape["num_attention_heads"])
            shape["head_dim"] = int(
                getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
            )
        for group in self.groups:
            if group.lower_bound:
                shape[group.lower_bound] = int(getattr(text, group.lower_bound))
        return shape

    def layer_kinds(self, config) -> list[str] | None:
        """The kind of every layer (a hybrid model's pattern), or `None` when all layers are alike."""
        if self.layer_kind_key is None:
            return None
        pattern = getattr(text_config(config), self.layer_kind_key)
        return list(pattern)

    def check_layer_kinds(self, config) -> None:
        """`ValueError` naming the pattern field when a layer has a kind the groups do not describe (or the field
        of another part they do not describe)."""
        for key in self.unsupported_nonzero_keys:
            value = getattr(text_config(config), key, None)
            if value:
                raise ValueError(
                    f"{key}={value} is not supported yet for {self.model_types[0]}: allowed 0 (this part is not "
                    "described by its dimension groups)"
                )
        for key, allowed in self.required_values:
            value = getattr(text_config(config), key, None)
            if value != allowed:
                raise ValueError(
                    f"{key}={value} is not supported yet for {self.model_types[0]}: allowed {allowed} (the dimension "
                    "groups describe only this layout)"
                )
        kinds = self.layer_kinds(config)
        if kinds is None or not self.supported_layer_kinds:
            return
        other = sorted(set(kinds) - set(self.supported_layer_kinds))
        if other:
            raise ValueError(
                f"{self.layer_kind_key} contains {other}, which hf-minitron cannot prune yet for "
                f"{self.model_types[0]}: allowed layer kinds {list(self.supported_layer_kinds)}"
            )

    @property
    def embedding_group(self) -> DimensionGroup | None:
        """The group that cuts the token embedding (the residual-stream channels), if any."""
        target = f"{self.embed_path}.weight"
        return next((g for g in self.groups if any(s.path == target for s in g.slices)), None)

    def depth_values(self, config, kept_layers: list[int]) -> dict:
        """The text-config entries that describe which layers remain: per-layer lists sliced to `kept_layers`,
        "first N layers" fields recounted, layer-index lists remapped, derived patterns rewritten."""
        text = text_config(config)
        n_layers = text.num_hidden_layers
        values: dict = {}
        for name in self.per_layer_config_lists:
            current = getattr(text, name, None)
            if isinstance(current, (list, tuple)) and len(current) == n_layers:
                values[name] = [current[i] for i in kept_layers]
        for name in self.layer_prefix_count_fields:
            current = getattr(text, name, None)
            if isinstance(current, int):
                values[name] = sum(1 for i in kept_layers if i < current)
        for name in self.layer_index_lists:
            current = getattr(text, name, None)
            if isinstance(current, (list, tuple)):
                values[name] = [kept_layers.index(i) for i in current if i in kept_layers]
        if self.layer_pattern_values is not None:
            values.update(self.layer_pattern_values(text, kept_layers))
        values["num_hidden_layers"] = len(kept_layers)
        return values

    def check_sizes(self, config, sizes: dict[str, int]) -> None:
        """`ValueError` naming the field when `sizes` break a constraint the modeling code assumes silently."""
        self.check_layer_kinds(config)
        current = self.shape(config)
        for key in self.fixed_keys:
            # one unit per group (Mamba-2 with n_groups == heads): the groups go with their units, "MHA stays MHA"
            whole = any(
                g.selection == "gqa"
                and g.config_keys[1] == key
                and current[g.key] == current[key]
                and sizes[g.key] == sizes[key]
                for g in self.groups
            )
            if key in sizes and sizes[key] != current.get(key) and not whole:
                raise ValueError(
                    f"{key}={sizes[key]} is invalid for {self.model_types[0]}: allowed {current.get(key)} "
                    "(kept whole: only the units within each group are pruned)"
                )
        if self.inner_width_tie is not None:
            heads_key, size_key, expand_key = self.inner_width_tie
            text = text_config(config)
            size, expand, hidden = getattr(text, size_key), getattr(text, expand_key), sizes["hidden_size"]
            if sizes[heads_key] * size != expand * hidden:
                allowed = f"{expand * hidden // size}" if expand * hidden % size == 0 else "none"
                raise ValueError(
                    f"{heads_key}={sizes[heads_key]} with hidden_size={hidden} is invalid for "
                    f"{self.model_types[0]}: its config requires {heads_key} * {size_key} ({size}) == {expand_key} "
                    f"({expand}) * hidden_size, so allowed {heads_key}={allowed} for hidden_size={hidden} "
                    "(Mamba heads are pruned only with the hidden size, in proportion)"
                )
        if not self.heads_span_hidden:
            return
        head_dim = self.shape(config)["head_dim"]
        hidden, heads = sizes["hidden_size"], sizes["num_attention_heads"]
        if heads * head_dim != hidden:
            raise ValueError(
                f"num_attention_heads={heads} with hidden_size={hidden} is invalid for {self.model_types[0]}: its "
                f"attention is hidden_size wide, so allowed num_attention_heads * head_dim ({head_dim}) == "
                f"hidden_size (e.g. num_attention_heads={hidden // head_dim} for hidden_size={hidden // head_dim * head_dim})"
            )

    def module_paths(self, num_layers: int, kinds: list[str] | None = None) -> list[str]:
        """Every module path this spec relies on, for a model with `num_layers` layers (of `kinds`, if hybrid)."""
        paths = [self.layers_path, self.embed_path, self.final_norm_path, self.lm_head_path]
        for group in self.groups:
            for s in group.slices:
                if s.path.endswith(".bias") or s.optional:
                    continue
                module = s.path.rsplit(".", 1)[0]
                if group.scope == "layer":
                    paths += [
                        f"{self.layers_path}.{i}.{module}"
                        for i in range(num_layers)
                        if kinds is None or applies(group.layer_kinds, kinds[i])
                    ]
                else:
                    paths += expand(module, num_layers, kinds, s.layer_kinds)
        return list(dict.fromkeys(paths))

    def model_class(self):
        """The transformers Auto class that builds and loads this family's checkpoints."""
        import transformers

        return getattr(transformers, self.auto_class)


def text_config(config):
    """The text part of a config (a composite checkpoint's `text_config`, else the config itself)."""
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def with_values(config, values: dict):
    """A copy of a (possibly composite) config whose text part carries `values`."""
    import copy

    config = copy.deepcopy(config)
    text = text_config(config)
    for name, value in values.items():
        setattr(text, name, value)
    return config


def register(spec: ArchitectureSpec) -> ArchitectureSpec:
    """Add a spec to the registry under each of its model types."""
    for model_type in spec.model_types:
        _REGISTRY[model_type] = spec
    return spec


def supported_model_types() -> list[str]:
    """Sorted model types with a registered spec."""
    return sorted(_REGISTRY)


def get_spec(model_or_config) -> ArchitectureSpec:
    """The spec for a model, a config, or a `model_type` string; `ValueError` listing the supported types."""
    if isinstance(model_or_config, str):
        model_type = model_or_config
    else:
        config = getattr(model_or_config, "config", model_or_config)
        model_type = getattr(config, "model_type", None)
    if model_type not in _REGISTRY:
        raise ValueError(
            f"model_type={model_type!r} is not supported: allowed one of {supported_model_types()}"
        )
    return _REGISTRY[model_type]


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder trunk of a causal LM (embeddings, layers, final norm): `get_decoder()`, or the module holding the
    spec's layers when `get_decoder()` returns the LM itself (`Llama4ForCausalLM` in transformers 5.x, whose
    `base_model_prefix` names no attribute)."""
    decoder = model.get_decoder()
    if decoder is not model:
        return decoder
    spec = _REGISTRY.get(getattr(getattr(model, "config", None), "model_type", None))
    parent = spec.layers_path.rpartition(".")[0] if spec is not None else "model"
    try:
        return model.get_submodule(parent) if parent else model
    except AttributeError:  # a base model (LlamaModel) is its own decoder
        return model
