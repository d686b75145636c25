"""`ArchitectureSpec`: everything hf-minitron knows about a model family, as data, keyed by `model_type`."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_REGISTRY: dict[str, ArchitectureSpec] = {}


@dataclass(frozen=True)
class ArchitectureSpec:
    """
    Module names and numeric conventions of a decoder-only causal LM family. Paths are relative to the
    `*ForCausalLM` model (`model_path`) or to one decoder layer (`layer_path`).

    Args:
        model_types (`tuple[str, ...]`): `config.model_type` values this spec covers.
        layers_path (`str`): The `nn.ModuleList` of decoder layers.
        embed_path (`str`): The token embedding.
        final_norm_path (`str`): The norm before the LM head.
        lm_head_path (`str`): The output projection.
        attention (`str`), q_proj, k_proj, v_proj, o_proj (`str`): Attention module and its projections.
        mlp (`str`), gate_proj (`str | None`), up_proj, down_proj (`str`): MLP and its projections
            (`gate_proj=None` for an ungated MLP).
        layer_norms (`tuple[str, ...]`): Norms over the hidden size inside a layer; their outputs score the
            embedding channels and they are sliced with them.
        head_norms (`tuple[str, ...]`): Norms over `head_dim` (q/k norms); never sliced (head_dim is kept).
        norm_weight_offset (`float`): 1.0 when a norm computes `x * (1 + weight)` (Gemma, Nemotron's
            LayerNorm1P), else 0.0.
        embed_scale_from_hidden_size (`bool`): The model multiplies embeddings by `sqrt(config.hidden_size)`.
            Pruning the hidden size to H' would change that factor, so the embedding rows are multiplied by
            `sqrt(H/H')` and the module's scale set to `sqrt(H')`: the kept channels see exactly the values they
            saw before. With tied embeddings the LM head sees the same factor, which the final norm's gain undoes.
        embed_scale_attributes (`tuple[str, ...]`): Attributes of the embedding module holding that scale.
        per_layer_config_lists (`tuple[str, ...]`): Config lists with one entry per layer (sliced when dropping).
        layer_prefix_count_fields (`tuple[str, ...]`): Config ints meaning "the first N layers" (recounted).
        notes (`str`): Anything else worth knowing (kept in one place rather than in code branches).
    """

    model_types: tuple[str, ...]
    layers_path: str = "model.layers"
    embed_path: str = "model.embed_tokens"
    final_norm_path: str = "model.norm"
    lm_head_path: str = "lm_head"
    attention: str = "self_attn"
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    o_proj: str = "o_proj"
    mlp: str = "mlp"
    gate_proj: str | None = "gate_proj"
    up_proj: str = "up_proj"
    down_proj: str = "down_proj"
    layer_norms: tuple[str, ...] = ("input_layernorm", "post_attention_layernorm")
    head_norms: tuple[str, ...] = ()
    norm_weight_offset: float = 0.0
    embed_scale_from_hidden_size: bool = False
    embed_scale_attributes: tuple[str, ...] = ()
    per_layer_config_lists: tuple[str, ...] = ("layer_types",)
    layer_prefix_count_fields: tuple[str, ...] = ()
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

    def attn(self, layer: nn.Module) -> nn.Module:
        return layer.get_submodule(self.attention)

    def mlp_module(self, layer: nn.Module) -> nn.Module:
        return layer.get_submodule(self.mlp)

    @property
    def mlp_inputs(self) -> tuple[str, ...]:
        """MLP projections that read the hidden state and write neurons (gate first when gated)."""
        return (self.gate_proj, self.up_proj) if self.gate_proj else (self.up_proj,)

    def norm_modules(self, layer: nn.Module) -> list[nn.Module]:
        return [layer.get_submodule(name) for name in self.layer_norms]

    def module_paths(self, num_layers: int) -> list[str]:
        """Every module path this spec relies on, for a model with `num_layers` layers."""
        paths = [self.layers_path, self.embed_path, self.final_norm_path, self.lm_head_path]
        per_layer = [
            self.attention,
            *(f"{self.attention}.{p}" for p in (self.q_proj, self.k_proj, self.v_proj, self.o_proj)),
            self.mlp,
            *(f"{self.mlp}.{p}" for p in (*self.mlp_inputs, self.down_proj)),
            *self.layer_norms,
            *self.head_norms,
        ]
        paths += [f"{self.layers_path}.{i}.{p}" for i in range(num_layers) for p in per_layer]
        return paths

    def tp_plan(self) -> dict[str, str]:
        """The tensor-parallel plan these names imply, in transformers' `base_model_tp_plan` notation."""
        prefix = self.layers_path.split(".", 1)[1] if "." in self.layers_path else self.layers_path
        plan = {
            f"{prefix}.*.{self.attention}.{p}": "colwise" for p in (self.q_proj, self.k_proj, self.v_proj)
        }
        plan[f"{prefix}.*.{self.attention}.{self.o_proj}"] = "rowwise"
        plan.update({f"{prefix}.*.{self.mlp}.{p}": "colwise" for p in self.mlp_inputs})
        plan[f"{prefix}.*.{self.mlp}.{self.down_proj}"] = "rowwise"
        return plan


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
