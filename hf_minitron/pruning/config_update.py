"""The one place that writes pruned sizes into `model.config`, plus the provenance record `config.minitron`."""

from __future__ import annotations

from torch import nn

from hf_minitron.architectures import ArchitectureSpec


def pruned_config_values(
    config,
    spec: ArchitectureSpec,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    kept_layers: list[int],
) -> dict:
    """The config entries that change: sizes (head_dim explicitly), per-layer lists sliced to the kept layers,
    "first N layers" fields recounted."""
    values = {}
    for name in spec.per_layer_config_lists:
        current = getattr(config, name, None)
        if isinstance(current, (list, tuple)) and len(current) == config.num_hidden_layers:
            values[name] = [current[i] for i in kept_layers]
    for name in spec.layer_prefix_count_fields:
        current = getattr(config, name, None)
        if isinstance(current, int):
            values[name] = sum(1 for i in kept_layers if i < current)
    values.update(
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_attention_heads=num_attention_heads,
        num_key_value_heads=num_key_value_heads,
        head_dim=head_dim,
        num_hidden_layers=len(kept_layers),
    )
    return values


def check_config_values(config, values: dict) -> None:
    """Let transformers' own config class validate the pruned shape (some require hidden % heads == 0)."""
    try:
        type(config).from_dict({**config.to_dict(), **values})
    except Exception as error:  # strict-dataclass and plain validation errors alike
        shape = ", ".join(f"{k}={values[k]}" for k in ("hidden_size", "num_attention_heads", "head_dim"))
        raise ValueError(
            f"{shape} is invalid: allowed shapes that {type(config).__name__} accepts; it says: {error}"
        ) from error


def update_model_config(model: nn.Module, spec: ArchitectureSpec, values: dict) -> None:
    """Write `values` into `model.config` (the only place that does) and refresh sizes cached on modules, so
    that `from_config(model.config)` builds exactly the pruned shape."""
    for name, value in values.items():
        setattr(model.config, name, value)
    n_q, n_kv = values["num_attention_heads"], values["num_key_value_heads"]
    sizes = {
        "hidden_size": values["hidden_size"],
        "intermediate_size": values["intermediate_size"],
        "num_heads": n_q,
        "num_attention_heads": n_q,
        "num_key_value_heads": n_kv,
        "num_key_value_groups": n_q // n_kv,
    }
    for layer in spec.layers(model):
        for module in (layer, spec.attn(layer), spec.mlp_module(layer)):
            for name, value in sizes.items():
                current = getattr(module, name, None)
                if isinstance(current, int) and not isinstance(current, bool):
                    setattr(module, name, value)


def provenance(
    previous: dict | None,
    *,
    source_config_sizes: dict[str, int],
    kept_layers: list[int],
    kept_hidden_channels: list[int] | None,
) -> dict:
    """The `config.minitron` record, composed with an earlier one so it refers to the original model."""
    if previous:
        kept_layers = [previous["kept_layers"][i] for i in kept_layers]
        earlier = previous.get("kept_hidden_channels")
        if earlier is not None:
            channels = kept_hidden_channels if kept_hidden_channels is not None else range(len(earlier))
            kept_hidden_channels = [earlier[i] for i in channels]
        return {**previous, "kept_layers": kept_layers, "kept_hidden_channels": kept_hidden_channels}
    return {
        "source_num_hidden_layers": source_config_sizes["num_hidden_layers"],
        "kept_layers": kept_layers,
        "source_hidden_size": source_config_sizes["hidden_size"],
        "kept_hidden_channels": kept_hidden_channels,
        "source_intermediate_size": source_config_sizes["intermediate_size"],
        "source_num_attention_heads": source_config_sizes["num_attention_heads"],
        "source_num_key_value_heads": source_config_sizes["num_key_value_heads"],
    }
