"""`prune_model`: validate everything, then depth and width surgery in place, then the config update."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from hf_minitron.architectures import get_spec
from hf_minitron.config import PruningConfig, attention_shape
from hf_minitron.importance.estimate import requested_axes
from hf_minitron.importance.scores import ImportanceScores
from hf_minitron.pruning.config_update import (
    check_config_values,
    provenance,
    pruned_config_values,
    update_model_config,
)
from hf_minitron.pruning.depth import drop_layers, layers_to_keep
from hf_minitron.pruning.slicing import top_sorted
from hf_minitron.pruning.width import prune_channels, prune_heads, prune_neurons

logger = logging.getLogger(__name__)

_AXIS_FIELD = {
    "neurons": "intermediate_size",
    "heads": "num_attention_heads/num_key_value_heads",
    "channels": "hidden_size",
    "layers": "num_hidden_layers",
}


def _check_scores(model_config, config: PruningConfig, scores: ImportanceScores | None) -> set[str]:
    # after resolve_target_params the explicit sizes decide what is pruned
    axes = requested_axes(model_config, dataclasses.replace(config, target_params=None))
    if not axes:
        return axes
    if scores is None:
        raise ValueError(
            f"scores=None is invalid: allowed ImportanceScores for {sorted(axes)} (estimate_importance)"
        )
    scores.check_compatible(model_config)
    for axis in axes:
        if getattr(scores, axis) is None:
            raise ValueError(
                f"scores.{axis}=None is invalid: {_AXIS_FIELD[axis]} is pruned, so allowed scores with {axis} "
                "(estimate them with this PruningConfig)"
            )
    if "layers" in axes and scores.metadata.get("depth_metric") == "contiguous":
        block = model_config.num_hidden_layers - config.num_hidden_layers
        if scores.metadata.get("contiguous_block") != block:
            raise ValueError(
                f"num_hidden_layers={config.num_hidden_layers} is invalid for these scores: allowed "
                f"{model_config.num_hidden_layers - scores.metadata.get('contiguous_block', 0)} (the contiguous "
                "block length they were computed for); recompute the scores for this target"
            )
    return axes


def prune_model(model: nn.Module, config: PruningConfig, scores: ImportanceScores | None = None) -> nn.Module:
    """
    Prune a causal LM in place, Minitron style: the same new width in every layer, MLP neurons ranked per layer,
    embedding channels ranked once for the whole model, GQA-uniform head pruning, layers dropped and renumbered.

    Args:
        model (`PreTrainedModel`): A model of a supported architecture.
        config (`PruningConfig`): The targets (`None` fields keep their size).
        scores (`ImportanceScores`, *optional*): From `estimate_importance`; needed for every pruned axis except
            explicit `layers_to_drop`.

    Returns:
        The same model object, pruned, with `model.config` updated and the provenance in `model.config.minitron`.
        Everything is validated before the first tensor changes: a `ValueError` leaves the model untouched.
    """
    spec = get_spec(model)
    target = config.target_params
    if target is not None:
        from hf_minitron.search import resolve_target_params

        config = resolve_target_params(model.config, config)
        logger.info(
            "target_params=%d resolved to hidden_size=%s, intermediate_size=%s (search_architectures ranks "
            "alternatives after a short retraining)",
            target,
            config.hidden_size,
            config.intermediate_size,
        )
    mc = model.config
    config.validate_for(mc)
    axes = _check_scores(mc, config, scores)

    source = {
        "hidden_size": mc.hidden_size,
        "intermediate_size": mc.intermediate_size,
        "num_attention_heads": mc.num_attention_heads,
        "num_key_value_heads": attention_shape(mc)[1],
        "num_hidden_layers": mc.num_hidden_layers,
    }
    head_dim = attention_shape(mc)[2]
    new_q, new_kv = config.resolve_heads(mc)
    new_hidden = config.hidden_size or source["hidden_size"]
    new_inter = config.intermediate_size or source["intermediate_size"]
    n_keep = config.num_hidden_layers or source["num_hidden_layers"]
    kept_layers = layers_to_keep(
        source["num_hidden_layers"],
        n_keep,
        scores.layers if "layers" in axes else None,
        contiguous=scores is not None and scores.metadata.get("depth_metric") == "contiguous",
        layers_to_drop=config.layers_to_drop,
    )
    values = pruned_config_values(
        mc,
        spec,
        hidden_size=new_hidden,
        intermediate_size=new_inter,
        num_attention_heads=new_q,
        num_key_value_heads=new_kv,
        head_dim=head_dim,
        kept_layers=kept_layers,
    )
    check_config_values(mc, values)
    tied = spec.lm_head(model).weight is spec.embed(model).weight

    with torch.no_grad():
        drop_layers(spec.layers(model), kept_layers)
        for layer, src in zip(spec.layers(model), kept_layers):
            if "neurons" in axes:
                prune_neurons(spec, layer, scores.neurons[src], new_inter)
            if "heads" in axes:
                prune_heads(
                    spec,
                    layer,
                    scores.heads[src],
                    source["num_key_value_heads"],
                    new_q,
                    new_kv,
                    head_dim,
                    config.head_carry_over,
                )
        kept_channels = None
        if "channels" in axes:
            keep = top_sorted(scores.channels, new_hidden)
            prune_channels(spec, model, keep, tied)
            kept_channels = keep.tolist()

    update_model_config(model, spec, values)
    model.config.minitron = provenance(
        getattr(mc, "minitron", None),
        source_config_sizes=source,
        kept_layers=kept_layers,
        kept_hidden_channels=kept_channels,
    )
    return model
