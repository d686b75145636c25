"""The one place that writes pruned sizes into `model.config`, plus the provenance record `config.minitron`."""

from __future__ import annotations

from torch import nn

from hf_minitron.architectures import ArchitectureSpec


def update_model_config(
    model: nn.Module,
    spec: ArchitectureSpec,
    *,
    hidden_size: int,
    intermediate_size: int,
    num_attention_heads: int,
    num_key_value_heads: int,
    head_dim: int,
    kept_layers: list[int],
) -> None:
    """Write the new sizes (head_dim explicitly) so that `from_config(model.config)` builds the pruned shape,
    slice per-layer config lists, recount "first N layers" fields and refresh sizes cached on modules."""
    config = model.config
    for name in spec.per_layer_config_lists:
        values = getattr(config, name, None)
        if isinstance(values, (list, tuple)) and len(values) == config.num_hidden_layers:
            setattr(config, name, [values[i] for i in kept_layers])
    for name in spec.layer_prefix_count_fields:
        value = getattr(config, name, None)
        if isinstance(value, int):
            setattr(config, name, sum(1 for i in kept_layers if i < value))
    config.hidden_size = hidden_size
    config.intermediate_size = intermediate_size
    config.num_attention_heads = num_attention_heads
    config.num_key_value_heads = num_key_value_heads
    config.head_dim = head_dim
    config.num_hidden_layers = len(kept_layers)
    sizes = {
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_heads": num_attention_heads,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "num_key_value_groups": num_attention_heads // num_key_value_heads,
    }
    for layer in spec.layers(model):
        for module in (layer, spec.attn(layer), spec.mlp_module(layer)):
            for name, value in sizes.items():
                if isinstance(getattr(module, name, None), int) and not isinstance(
                    getattr(module, name), bool
                ):
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
