"""`prune_model`: validate everything, then depth and width surgery in place, then the config update."""

from __future__ import annotations

import dataclasses
import logging

import torch
from torch import nn

from hf_minitron.architectures import get_spec
from hf_minitron.architectures.dimensions import applies, select
from hf_minitron.architectures.spec import text_config
from hf_minitron.config import PruningConfig
from hf_minitron.importance.scores import ImportanceScores
from hf_minitron.pruning.budget import resolve_target_params
from hf_minitron.pruning.config_update import (
    check_config_values,
    provenance,
    pruned_config_values,
    update_model_config,
)
from hf_minitron.pruning.depth import check_kept_layer_types, drop_layers, layers_to_keep
from hf_minitron.pruning.surgery import (
    Surgeon,
    carry_over,
    cut_group,
    refresh_module_attributes,
    refresh_module_shapes,
    rescale_embedding,
)

logger = logging.getLogger(__name__)


def _check_scores(model_config, config: PruningConfig, scores: ImportanceScores | None) -> set[str]:
    spec = get_spec(model_config)
    # after resolve_target_params the explicit sizes decide what is pruned
    names = dataclasses.replace(config, target_params=None, target_active_params=None).pruned_dimensions(
        model_config
    )
    if not names:
        return names
    if scores is None:
        raise ValueError(
            f"scores=None is invalid: allowed ImportanceScores for {sorted(names)} (estimate_importance)"
        )
    scores.check_compatible(model_config)
    keys = {g.name: "/".join(g.config_keys) for g in spec.groups} | {"layers": "num_hidden_layers"}
    for name in sorted(names):
        if scores.get(name) is None:
            raise ValueError(
                f"scores.{name}=None is invalid: {keys[name]} is pruned, so allowed scores with {name} "
                "(estimate them with this PruningConfig)"
            )
    if "layers" in names and scores.metadata.get("depth_metric") == "contiguous":
        n_layers = text_config(model_config).num_hidden_layers
        block = n_layers - config.num_hidden_layers
        if scores.metadata.get("contiguous_block") != block:
            raise ValueError(
                f"num_hidden_layers={config.num_hidden_layers} is invalid for these scores: allowed "
                f"{n_layers - scores.metadata.get('contiguous_block', 0)} (the contiguous "
                "block length they were computed for); recompute the scores for this target"
            )
    return names


def prune_model(model: nn.Module, config: PruningConfig, scores: ImportanceScores | None = None) -> nn.Module:
    """
    Prune a causal LM in place, Minitron style: the same new width in every layer, each declared dimension group
    ranked per layer (MLP neurons, GQA-uniform heads) or once for the model (embedding channels), layers dropped
    and renumbered. A composite checkpoint (a vision-language model) is pruned in its text part.

    Args:
        model (`PreTrainedModel`): A model of a supported architecture.
        config (`PruningConfig`): The targets (`None` fields keep their size).
        scores (`ImportanceScores`, *optional*): From `estimate_importance`; needed for every pruned dimension
            except explicit `layers_to_drop`.

    Returns:
        The same model object, pruned, with `model.config` updated and the provenance in `model.config.minitron`.
        Everything is validated before the first tensor changes: a `ValueError` leaves the model untouched.
    """
    spec = get_spec(model)
    if config.target_params is not None or config.target_active_params is not None:
        targets = (config.target_params, config.target_active_params)
        config = resolve_target_params(model.config, config)
        logger.info("budgets %s resolved to %s", targets, config.target_sizes(model.config))
    mc = model.config
    config.validate_for(mc)
    names = _check_scores(mc, config, scores)

    old = spec.shape(mc)
    sizes = config.target_sizes(mc)
    n_layers = old["num_hidden_layers"]
    kept_layers = layers_to_keep(
        n_layers,
        config.num_hidden_layers or n_layers,
        scores.layers if "layers" in names else None,
        contiguous=scores is not None and scores.metadata.get("depth_metric") == "contiguous",
        layers_to_drop=config.layers_to_drop,
    )
    check_kept_layer_types(spec, mc, kept_layers, explicit=config.layers_to_drop is not None)
    spec.check_sizes(mc, sizes)
    values = pruned_config_values(mc, spec, sizes, kept_layers)
    check_config_values(mc, values)
    tied = spec.lm_head(model).weight is spec.embed(model).weight
    source_kinds = spec.layer_kinds(mc)
    kinds = None if source_kinds is None else [source_kinds[i] for i in kept_layers]
    rescale = spec.rescale_norms if config.rescale_norms is None else config.rescale_norms
    norm_inputs = None
    if rescale and config.norm_rescale_factor == "data":
        norm_inputs = scores.norm_inputs if scores is not None else None
        if not norm_inputs:
            raise ValueError(
                "norm_rescale_factor='data' needs scores with norm statistics (ImportanceScores.norm_inputs, "
                "recorded by estimate_importance with calibration batches); allowed without them: 'width'"
            )
    surgeon = Surgeon(model, text_config(mc), spec.norm_weight_offset, rescale, norm_inputs)

    kept_channels = None
    with torch.no_grad():
        drop_layers(spec.layers(model), kept_layers)
        for group in spec.groups:
            if group.name not in names:
                continue
            if group.scope == "layer":
                for layer, src in zip(spec.layers(model), kept_layers):
                    if source_kinds is not None and not applies(group.layer_kinds, source_kinds[src]):
                        continue
                    if group.selection == "gqa" and config.head_carry_over:
                        carry_over(layer, group, scores.get(group.name)[src], old, sizes, text_config(mc))
                    kept = select(group, scores.get(group.name)[src], old, sizes)
                    cut_group(surgeon, layer, group, kept, old, len(kept_layers))
            else:
                kept = select(group, scores.get(group.name), old, sizes)
                cut_group(surgeon, model, group, kept, old, len(kept_layers), kinds)
                if (
                    group is spec.embedding_group
                ):  # the residual stream: recorded, and Gemma's embed scale kept
                    kept_channels = kept["unit"].tolist()
                    rescale_embedding(spec, model, old[group.key], sizes[group.key], tied)
        refresh_module_shapes(model)

    update_model_config(model, spec, old, values)
    refresh_module_attributes(spec, model, kinds)
    model.config.minitron = provenance(
        getattr(mc, "minitron", None), source=old, kept_layers=kept_layers, kept_hidden_channels=kept_channels
    )
    return model
