"""Width surgery for any declared dimension group: every tensor slice of the group keeps the chosen units."""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from hf_minitron.architectures.dimensions import (
    DimensionGroup,
    TensorSlice,
    entries,
    expand,
    index_counts,
    rows_of,
)


class Surgeon:
    """Replaces parameters by their kept entries (dtype, device, requires_grad kept); a parameter shared by
    several modules (a tied LM head) is cut once and stays shared."""

    def __init__(
        self,
        model: nn.Module,
        config,
        norm_weight_offset: float,
        rescale_norms: bool = False,
        norm_inputs: dict[str, torch.Tensor] | None = None,
    ):
        counts = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
        self._shared = {i for i, n in counts.items() if n > 1}
        self._cut: dict[int, tuple[nn.Parameter, nn.Parameter]] = {}
        self.config = config
        self.offset = norm_weight_offset
        self.rescale_norms = rescale_norms
        # resolved to modules before any layer is dropped: the paths carry the layer indices of the scored model;
        # checked here, before any cut, so that statistics of another model leave this one untouched
        self._energy: dict[nn.Module, torch.Tensor] = {}
        for path, energy in (norm_inputs or {}).items():
            try:
                norm = model.get_submodule(path)
            except AttributeError:
                continue  # scores of a wider model part (checked against the shapes elsewhere)
            width = getattr(norm, "weight", None)
            if width is not None and energy.numel() != width.shape[-1]:
                raise ValueError(
                    f"ImportanceScores.norm_inputs[{path!r}] has {energy.numel()} channels but the norm has "
                    f"{width.shape[-1]}: allowed are scores computed for this model"
                )
            self._energy[norm] = energy

    def cut(self, root: nn.Module, s: TensorSlice, path: str, kept: dict, counts: dict) -> None:
        """Keep the entries of `kept` units along `s.dim` of the parameter at `path` under `root`."""
        owner_path, name = path.rsplit(".", 1)
        skippable = name == "bias" or s.optional
        try:
            owner = root.get_submodule(owner_path)
        except AttributeError:
            if skippable:
                return
            raise
        old = getattr(owner, name, None)
        if old is None:
            if skippable:
                return
            raise ValueError(
                f"{path} is missing from {type(root).__name__}: the spec does not match the model"
            )
        if id(old) in self._cut:
            setattr(owner, name, self._cut[id(old)][1])
            return
        index = entries(s.segments, kept, counts, self.config, s.grouped_by).to(old.device)
        if index.dim() == 2:  # different entries in each block (expert) along s.block_dim
            moved = old.detach().movedim((s.block_dim, s.dim), (0, -1))
            picked = moved.gather(
                -1,
                index.view(index.shape[0], *[1] * (moved.dim() - 2), -1).expand(
                    *moved.shape[:-1], index.shape[1]
                ),
            )
            value = picked.movedim((0, -1), (s.block_dim, s.dim)).contiguous()
        else:
            value = old.detach().index_select(s.dim, index)
        if s.rms_width and self.rescale_norms:  # the statistic spans fewer entries: keep the kept outputs
            factor = self._norm_factor(s, owner, old.shape[s.dim], value.shape[s.dim], index, kept, counts)
            value = ((self.offset + value.float()) * factor - self.offset).to(value.dtype)
        # a buffer (a router's score-correction bias) stays a buffer
        new = nn.Parameter(value, requires_grad=old.requires_grad) if isinstance(old, nn.Parameter) else value
        setattr(owner, name, new)
        if id(old) in self._shared:
            self._cut[id(old)] = (old, new)

    def _norm_factor(
        self, s: TensorSlice, norm: nn.Module, old_width, new_width, index, kept, counts
    ) -> float:
        """rms_new / rms_old of a norm's statistic: from the per-channel input energy of the calibration data
        when the scores carry it (sqrt((E_kept / new) / (E_all / old))), else sqrt(old / new), which assumes the
        cut entries carried nothing."""
        energy = self._energy.get(norm) if s.rms_width is True else None
        if energy is not None and index.dim() == 1 and energy.numel() == old_width:
            e = energy.double()
            kept_mean, all_mean = float(e[index.cpu()].mean()), float(e.mean())
            if kept_mean > 0 and all_mean > 0:  # dead kept channels: nothing to match, the fixed factor
                return math.sqrt(kept_mean / all_mean)
        if s.rms_width == "kv":  # per group (Mamba-2's gated norm): whole groups may go too
            old_width, new_width = old_width / counts["kv"], new_width / len(kept["kv"])
        return math.sqrt(old_width / new_width)


def cut_group(
    surgeon: Surgeon,
    root: nn.Module,
    group: DimensionGroup,
    kept: dict,
    old: dict,
    n_layers: int,
    kinds: list[str] | None = None,
):
    """Cut every slice of `group` under `root` (a layer for per-layer groups, the model otherwise); `kinds`, the
    kind of each (kept) layer of a hybrid model, limits `*` slices to the layers that have them."""
    counts = index_counts(group, old)
    for s in group.slices:
        for path in expand(s.path, n_layers, kinds, s.layer_kinds):
            surgeon.cut(root, s, path, kept, counts)


def carry_over(layer: nn.Module, group: DimensionGroup, scores: torch.Tensor, old: dict, new: dict, config):
    """P1's trick inside each KV group: with L heads ranked by score and K kept, kept head i (1-based rank,
    2K-L < i <= K) becomes head_i + (head_i - head_{2K-i+1}), on the slices that read the heads."""
    q_key, kv_key = group.config_keys
    per_group = scores.reshape(old[kv_key], -1)
    r, new_r = per_group.shape[1], new[q_key] // new[kv_key]
    for s in group.slices:
        if s.role != "in" or len(s.segments) != 1 or s.segments[0].index != "query":
            continue
        rows = rows_of(s.segments[0].rows, config)
        w = layer.get_parameter(s.path).detach().transpose(0, s.dim)
        with torch.no_grad():
            for g in range(old[kv_key]):
                ranked = (g * r + torch.sort(per_group[g], descending=True, stable=True).indices).tolist()
                for i in range(max(1, 2 * new_r - r + 1), new_r + 1):
                    kept, pruned = ranked[i - 1], ranked[2 * new_r - i]
                    k, p = slice(kept * rows, (kept + 1) * rows), slice(pruned * rows, (pruned + 1) * rows)
                    w[k] = 2 * w[k] - w[p]


def refresh_module_shapes(model: nn.Module) -> None:
    """Shape attributes that modules cache (`in_features`, `embedding_dim`, `normalized_shape`) follow weights."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        if isinstance(module, nn.Linear):
            module.out_features, module.in_features = weight.shape
        elif isinstance(module, nn.Embedding):
            module.embedding_dim = weight.shape[1]
        elif isinstance(module, nn.Conv1d) and module.groups == module.in_channels == module.out_channels:
            module.in_channels = module.out_channels = module.groups = weight.shape[0]  # depthwise (Mamba)
        elif hasattr(module, "normalized_shape") and weight.dim() == 1:
            module.normalized_shape = (weight.shape[0],)


def rescale_embedding(spec, model: nn.Module, old_size: int, new_size: int, tied: bool) -> None:
    """Keep what kept channels receive when the model scales embeddings by sqrt(hidden_size) (Gemma)."""
    if not spec.embed_scale_from_hidden_size:
        return
    embed = spec.embed(model)
    factor = math.sqrt(old_size / new_size)
    with torch.no_grad():
        embed.weight.mul_(factor)
        for name in spec.embed_scale_attributes:
            value = getattr(embed, name)
            new = math.sqrt(new_size)
            setattr(embed, name, value.new_tensor(new) if isinstance(value, torch.Tensor) else new)
        if tied:  # the LM head shares the scaled rows: undo the factor in the final norm's gain
            norm = spec.final_norm(model)
            norm.weight.copy_(
                (spec.norm_weight_offset + norm.weight.float()) / factor - spec.norm_weight_offset
            )
            if getattr(norm, "bias", None) is not None:
                norm.bias.div_(factor)


def refresh_module_attributes(spec, model: nn.Module, kinds: list[str] | None) -> None:
    """Rewrite the sizes modules cache from the config (`DimensionGroup.module_attributes`) from the pruned config,
    in every layer the group lives in."""
    from hf_minitron.architectures.dimensions import applies
    from hf_minitron.architectures.spec import text_config

    config = text_config(model.config)
    for group in spec.groups:
        for i, layer in enumerate(spec.layers(model)):
            if kinds is not None and not applies(group.layer_kinds, kinds[i]):
                continue
            for path, attr, value in group.module_attributes:
                module, new = layer.get_submodule(path) if path else layer, value(config)
                current = getattr(module, attr, None)
                if isinstance(current, torch.Tensor):  # a buffer (Falcon-H1's mup_vector) keeps device, dtype
                    new = new.to(current)
                setattr(module, attr, new)
