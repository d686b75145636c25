"""The one place that writes pruned sizes into `model.config`, plus the provenance record `config.minitron`."""

from __future__ import annotations

from torch import nn

from hf_minitron.architectures import ArchitectureSpec
from hf_minitron.architectures.spec import MODULE_SIZE_ATTRIBUTES, text_config, with_values

_SEARCH_RADIUS = 4096  # how far `nearest_valid` looks on each side of a refused size


def pruned_config_values(
    config, spec: ArchitectureSpec, sizes: dict[str, int], kept_layers: list[int]
) -> dict:
    """The text-config entries that change: sizes (`head_dim` explicitly) and the kept layers' description."""
    values = spec.depth_values(config, kept_layers)
    values.update(sizes)
    if spec.derived_config_values is not None:
        values.update(spec.derived_config_values(text_config(config), values))
    head_dim = spec.shape(config).get("head_dim")
    if head_dim is not None:
        values["head_dim"] = head_dim
    values["num_hidden_layers"] = len(kept_layers)
    return values


def config_error(config, values: dict) -> Exception | None:
    """What the model's own config class says of `values` in the text part of `config` (None: accepted)."""
    try:
        config = with_values(config, values)
        type(config).from_dict(config.to_dict())
    except Exception as error:  # strict-dataclass and plain validation errors alike
        return error
    return None


def nearest_valid(config, values: dict, key: str) -> tuple[int | None, int | None]:
    """The closest values of `key` below and above `values[key]` that the config class accepts (others fixed)."""
    current = getattr(text_config(config), key)
    target = values[key]
    below = next(
        (
            v
            for v in range(target - 1, max(0, target - _SEARCH_RADIUS), -1)
            if not config_error(config, {**values, key: v})
        ),
        None,
    )
    top = min(current, target + _SEARCH_RADIUS)
    above = next(
        (v for v in range(target + 1, top + 1) if not config_error(config, {**values, key: v})), None
    )
    return below, above


def check_config_values(config, values: dict) -> None:
    """Let transformers' own config class validate the pruned shape, and say which sizes it would accept."""
    error = config_error(config, values)
    if error is None:
        return
    text = text_config(config)
    changed = [k for k, v in values.items() if isinstance(v, int) and getattr(text, k, None) not in (None, v)]
    for key in changed:
        if config_error(config, {**values, key: getattr(text, key)}) is None:  # this size alone is refused
            below, above = nearest_valid(config, values, key)
            options = " or ".join(str(v) for v in (below, above) if v is not None) or "none nearby"
            others = ", ".join(f"{k}={values[k]}" for k in changed if k != key)
            raise ValueError(
                f"{key}={values[key]} is invalid for {type(text).__name__}"
                + (f" with {others}" if others else "")
                + f": allowed nearest {options} (the config class says: {error})"
            ) from error
    shape = ", ".join(f"{k}={values[k]}" for k in changed)
    raise ValueError(
        f"{shape} is invalid: allowed shapes that {type(text).__name__} accepts; it says: {error}"
    ) from error


def update_model_config(model: nn.Module, spec: ArchitectureSpec, old: dict, values: dict) -> None:
    """Write `values` into the model's (text) config, the only place that does, and refresh sizes cached on
    modules, so that `from_config(model.config)` builds exactly the pruned shape."""
    text = text_config(model.config)
    for name, value in values.items():
        setattr(text, name, value)
    attributes = {**MODULE_SIZE_ATTRIBUTES, **dict(spec.module_size_attributes)}
    renamed = {attr: (old[key], values[key]) for attr, key in attributes.items() if key in old}
    if "num_key_value_heads" in old:
        renamed["num_key_value_groups"] = (
            old["num_attention_heads"] // old["num_key_value_heads"],
            values["num_attention_heads"] // values["num_key_value_heads"],
        )
    for module in (model, *spec.layers(model).modules()):  # the LM itself caches e.g. num_experts (aux loss)
        for attr, (before, after) in renamed.items():
            current = getattr(module, attr, None)
            if isinstance(current, int) and not isinstance(current, bool) and current == before:
                setattr(module, attr, after)


def provenance(
    previous: dict | None,
    *,
    source: dict[str, int],
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
        "source_num_hidden_layers": source["num_hidden_layers"],
        "kept_layers": kept_layers,
        "source_hidden_size": source.get("hidden_size"),
        "kept_hidden_channels": kept_hidden_channels,
        **{
            f"source_{k}": v
            for k, v in source.items()
            if k not in ("num_hidden_layers", "hidden_size", "head_dim")
        },
    }
