"""First-order Taylor importance: |weight x gradient| of the LM loss, summed onto each group's units and layers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_minitron.architectures import get_spec
from hf_minitron.architectures.dimensions import applies, expand, index_counts, per_unit, to_units, unit_shape
from hf_minitron.architectures.spec import text_config
from hf_minitron.importance.hooks import HookSet, TokenMask, all_reduce_statistics, all_reduce_sum
from hf_minitron.importance.norms import NormInputObserver
from hf_minitron.importance.scores import ImportanceScores

# A reducer folds the elementwise |w * g| of one parameter (on its device) into the CPU scores.
Reducer = Callable[[torch.Tensor], None]


def along(v: torch.Tensor, dim: int, block_dim: int | None = None) -> torch.Tensor:
    """Sum of `v` over every dim but `dim` (and `block_dim`, kept first: `[blocks, entries]`)."""
    keep = (dim,) if block_dim is None else (block_dim, dim)
    others = [d for d in range(v.dim()) if d not in keep]
    out = v.sum(others) if others else v
    return out.transpose(0, 1) if block_dim is not None and block_dim > dim else out


def resolve(root: nn.Module, path: str, optional: bool = False) -> nn.Parameter | None:
    """The parameter at `path`, or None for a bias (or an optional slice) the model does not have."""
    owner, name = path.rsplit(".", 1)
    try:
        value = getattr(root.get_submodule(owner), name, None)
    except AttributeError:
        value = None
    if value is None and name != "bias" and not optional:
        raise ValueError(f"{path} is missing from {type(root).__name__}: the spec does not match the model")
    return value


class _TaylorAccumulator:
    """Per-parameter reducers for one model, and the float32 score tensors they fill."""

    def __init__(self, model: nn.Module):
        self.spec = spec = get_spec(model)
        self.config = text_config(model.config)
        self.shape = spec.shape(model.config)
        self.layers = spec.layers(model)
        n_layers = len(self.layers)
        self.scores = {
            g.name: torch.zeros(
                (n_layers, *unit_shape(g, self.shape)) if g.scope == "layer" else unit_shape(g, self.shape)
            )
            for g in spec.groups
        }
        self.layer_scores = torch.zeros(n_layers)
        self.params: dict[int, nn.Parameter] = {}
        self.reducers: dict[int, list[Reducer]] = {}
        seen: set[tuple] = set()  # (group, parameter, dim): a tied LM head is counted once
        kinds = spec.layer_kinds(model.config)
        for group in spec.groups:
            counts = index_counts(group, self.shape)
            roots = list(enumerate(self.layers)) if group.scope == "layer" else [(None, model)]
            if group.scope == "layer" and kinds is not None:  # a hybrid group: only its layers
                roots = [(i, layer) for i, layer in roots if applies(group.layer_kinds, kinds[i])]
            for i, root in roots:
                target = self.scores[group.name] if i is None else self.scores[group.name][i]
                for s in group.slices:
                    for path in expand(s.path, n_layers, kinds, s.layer_kinds):
                        param = resolve(root, path, s.optional)
                        if (
                            not isinstance(param, nn.Parameter)
                            or not param.requires_grad
                            or (group.name, id(param), s.dim) in seen
                        ):
                            continue  # missing, or a buffer (a router's score-correction bias): no gradient
                        seen.add((group.name, id(param), s.dim))
                        self._add(param, self._slice_reducer(group, s, counts, target))
        for i, layer in enumerate(self.layers):
            for param in layer.parameters():
                self._add(param, lambda v, i=i: self.layer_scores[i].add_(v.sum().cpu()))

    def _slice_reducer(self, group, s, counts, target: torch.Tensor) -> Reducer:
        def reduce(v):
            reduced = along(v, s.dim, s.block_dim)
            for index, values in per_unit(
                reduced, s.segments, counts, self.config, grouped_by=s.grouped_by
            ).items():
                target.add_(to_units(group, index, values, self.shape).cpu())

        return reduce

    def _add(self, param: nn.Parameter, reducer: Reducer) -> None:
        self.params[id(param)] = param
        self.reducers.setdefault(id(param), []).append(reducer)

    def hook(self, param: nn.Parameter) -> None:
        """Post-accumulate-grad hook: fold |w * g| into the scores on the parameter's device, then free it."""
        if param.grad is not None:
            v = (param.detach().float() * param.grad.detach().float()).abs()
            for reducer in self.reducers[id(param)]:
                reducer(v)
            param.grad = None


def _labels(batch: dict) -> torch.Tensor:
    if "labels" in batch:
        return batch["labels"]
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = -100
    return labels


def estimate_taylor_importance(model: nn.Module, batches: Iterable[dict], config=None) -> ImportanceScores:
    """First-order Taylor importance (higher = more important): for every weight, |w x dL/dw| of the LM loss,
    summed over the entries of each unit of every declared dimension group (an MLP neuron's gate/up rows and
    down column; a query head's q rows and output columns plus its share of its KV group's k/v rows; an
    embedding channel's every read and write, norms, embedding and lm_head) and of each layer (all its weights),
    and over the calibration batches.

    One forward and backward per batch. Gradients are never kept for the whole model: a post-accumulate-grad
    hook on every parameter reduces its |w x g| on its own device to per-unit vectors, moves only those, and
    frees the gradient at once. Parameters outside the text model (a vision tower) get no gradient. The model's
    `requires_grad` flags, training mode and existing gradients are restored afterwards.

    Args:
        model (`nn.Module`): A supported transformers causal LM (any dtype/device).
        batches (`Iterable[dict]`): Calibration batches with `input_ids` and `attention_mask` (padding ignored;
            `labels` used when present).
        config (`PruningConfig`, *optional*): Only recorded in the metadata.
    """
    acc = _TaylorAccumulator(model)
    mask = TokenMask()
    # each norm's input energy, from the same forward, for the data-aware gain rescale
    norm_inputs = NormInputObserver(model, acc.spec, None, mask)
    every = list(model.parameters())
    flags = [p.requires_grad for p in every]
    saved_grads = [p.grad for p in every]
    was_training = model.training
    handles = []
    num_samples = num_tokens = 0
    device = model.get_input_embeddings().weight.device  # where a dispatched model takes its inputs
    try:
        model.eval()
        for p in every:
            p.requires_grad_(id(p) in acc.params)
            p.grad = None
        for p in acc.params.values():
            handles.append(p.register_post_accumulate_grad_hook(acc.hook))
        for batch in tqdm(batches, desc="taylor importance", leave=False):
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask") if k in batch}
            labels = _labels(batch).to(device)
            mask.set(inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])))
            with torch.enable_grad(), HookSet() as hooks:
                norm_inputs.register(hooks)
                loss = model(**inputs, labels=labels, use_cache=False).loss
            with torch.enable_grad():
                loss.backward()
            num_samples += int(labels.shape[0])
            num_tokens += int((labels != -100).sum())
    finally:
        for h in handles:
            h.remove()
        for p, flag, grad in zip(every, flags, saved_grads):
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)
    # under torch.distributed every rank scores its own batches: sum, so all ranks get the same scores
    names = list(acc.scores)
    norm_stats = [s for s in norm_inputs.statistics() if s.total is not None]
    *summed, layer_scores, counts = all_reduce_sum(
        [*acc.scores.values(), acc.layer_scores, torch.tensor([num_samples, num_tokens])]
    )
    all_reduce_statistics(norm_stats)
    num_samples, num_tokens = (int(c) for c in counts)
    if num_samples == 0:
        raise ValueError("batches is empty: Taylor importance needs at least one calibration batch")
    metadata = {
        "importance": "taylor",
        "model_type": model.config.model_type,
        "num_samples": num_samples,
        "num_tokens": num_tokens,
        "depth_metric": "taylor",
        **acc.shape,
    }
    scores = ImportanceScores(metadata=metadata, layers=layer_scores, **dict(zip(names, summed)))
    scores.norm_inputs = norm_inputs.results()
    return scores
