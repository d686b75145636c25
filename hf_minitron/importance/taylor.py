"""First-order Taylor importance: |weight x gradient| of the LM loss, summed per neuron, head, channel, layer."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_minitron.architectures import get_spec
from hf_minitron.importance.hooks import all_reduce_sum
from hf_minitron.importance.magnitude import layer_modules
from hf_minitron.importance.scores import ImportanceScores

# A reducer adds the elementwise |w * g| of one parameter to the score tensors it belongs to.
Reducer = Callable[[torch.Tensor], None]


class _TaylorAccumulator:
    """Per-parameter reducers for one model, and the float32 score tensors they fill."""

    def __init__(self, model: nn.Module):
        self.spec = spec = get_spec(model)
        mc = model.config
        self.layers = spec.layers(model)
        n_layers, hidden = len(self.layers), mc.hidden_size
        self.n_q = mc.num_attention_heads
        self.n_kv = getattr(mc, "num_key_value_heads", None) or self.n_q
        self.neurons = torch.zeros(n_layers, mc.intermediate_size)
        self.heads = torch.zeros(n_layers, self.n_q)
        self.channels = torch.zeros(hidden)
        self.layer_scores = torch.zeros(n_layers)
        self.params: list[nn.Parameter] = []
        self.reducers: dict[int, Reducer] = {}  # keyed by id(param)

        # Outside the layers: embedding and lm_head columns, final norm (a tied lm_head is the same Parameter).
        for module in (spec.embed(model), spec.lm_head(model)):
            self._add(module.weight, lambda v: self.channels.add_(v.sum(0)))
        for p in spec.final_norm(model).parameters():
            self._add(p, self.channels.add_)
        for i, layer in enumerate(self.layers):
            self._add_layer(i, layer, hidden)

    def _add(self, param: nn.Parameter, reducer: Reducer, layer: int | None = None) -> None:
        if id(param) in self.reducers:  # tied weights: counted once
            return
        self.params.append(param)
        if layer is None:
            self.reducers[id(param)] = reducer
        else:

            def with_layer(v, reducer=reducer, layer=layer):
                reducer(v)
                self.layer_scores[layer] += v.sum()

            self.reducers[id(param)] = with_layer

    def _add_layer(self, i: int, layer: nn.Module, hidden: int) -> None:
        m = layer_modules(self.spec, layer)
        n_q, n_kv, heads, neurons, channels = (
            self.n_q,
            self.n_kv,
            self.heads[i],
            self.neurons[i],
            self.channels,
        )

        def per_head(v, dim):  # rows (dim=0) or columns (dim=1) grouped by query head
            return (v if dim == 0 else v.t()).reshape(n_q, -1).sum(1)

        def per_group(v):  # k/v rows grouped by KV group, shared out over the group's query heads
            return v.reshape(n_kv, -1).sum(1).repeat_interleave(n_q // n_kv) / (n_q // n_kv)

        def add(module, weight_fn, bias_fn):
            self._add(module.weight, weight_fn, i)
            if getattr(module, "bias", None) is not None:
                self._add(module.bias, bias_fn, i)

        add(
            m["q"],
            lambda v: (heads.add_(per_head(v, 0)), channels.add_(v.sum(0))),
            lambda v: heads.add_(per_head(v, 0)),
        )
        for proj in (m["k"], m["v"]):
            add(
                proj,
                lambda v: (heads.add_(per_group(v)), channels.add_(v.sum(0))),
                lambda v: heads.add_(per_group(v)),
            )
        add(m["o"], lambda v: (heads.add_(per_head(v, 1)), channels.add_(v.sum(1))), channels.add_)
        for proj in m["mlp_inputs"]:
            add(proj, lambda v: (neurons.add_(v.sum(1)), channels.add_(v.sum(0))), neurons.add_)
        add(m["down"], lambda v: (neurons.add_(v.sum(0)), channels.add_(v.sum(1))), channels.add_)
        # Everything else in the layer (norms, q/k norms): hidden-size vectors score channels; all score the layer.
        for p in layer.parameters():
            self._add(p, channels.add_ if p.dim() == 1 and p.numel() == hidden else (lambda v: None), i)

    def hook(self, param: nn.Parameter) -> None:
        """Post-accumulate-grad hook: fold |w * g| into the scores, then free the gradient."""
        if param.grad is not None:
            self.reducers[id(param)]((param.detach().float() * param.grad.detach().float()).abs().cpu())
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
    summed over the weights of each MLP neuron (its gate/up rows and down column), query head (its q rows and
    o_proj columns, plus its share of the KV group's k/v rows), embedding channel (every column or row that reads
    or writes the residual stream, the norms, embedding and lm_head) and layer (all its weights), and over the
    calibration batches.

    One forward and backward per batch. Gradients are never kept for the whole model: a post-accumulate-grad
    hook on every parameter folds its |w x g| into the per-unit scores and frees that gradient at once, so
    the extra memory is one parameter's gradient at a time plus the activations of one batch. The model's
    `requires_grad` flags, training mode and existing gradients are restored afterwards.

    Args:
        model (`nn.Module`): A supported transformers causal LM (any dtype/device).
        batches (`Iterable[dict]`): Calibration batches with `input_ids` and `attention_mask` (padding ignored;
            `labels` used when present).
        config (`PruningConfig`, *optional*): Only recorded in the metadata.
    """
    acc = _TaylorAccumulator(model)
    params = acc.params
    flags = [p.requires_grad for p in params]
    saved_grads = [p.grad for p in params]
    was_training = model.training
    handles = []
    num_samples = num_tokens = 0
    device = model.get_input_embeddings().weight.device  # where a dispatched model takes its inputs
    try:
        model.eval()
        for p in params:
            p.requires_grad_(True)
            p.grad = None
            handles.append(p.register_post_accumulate_grad_hook(acc.hook))
        for batch in tqdm(batches, desc="taylor importance", leave=False):
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask") if k in batch}
            labels = _labels(batch).to(device)
            with torch.enable_grad():
                loss = model(**inputs, labels=labels, use_cache=False).loss
                loss.backward()
            num_samples += int(labels.shape[0])
            num_tokens += int((labels != -100).sum())
    finally:
        for h in handles:
            h.remove()
        for p, flag, grad in zip(params, flags, saved_grads):
            p.requires_grad_(flag)
            p.grad = grad
        model.train(was_training)
    # under torch.distributed every rank scores its own batches: sum, so all ranks get the same scores
    acc.neurons, acc.heads, acc.channels, acc.layer_scores, counts = all_reduce_sum(
        [acc.neurons, acc.heads, acc.channels, acc.layer_scores, torch.tensor([num_samples, num_tokens])]
    )
    num_samples, num_tokens = (int(c) for c in counts)
    if num_samples == 0:
        raise ValueError("batches is empty: Taylor importance needs at least one calibration batch")
    mc = model.config
    metadata = {
        "importance": "taylor",
        "model_type": mc.model_type,
        "num_samples": num_samples,
        "num_tokens": num_tokens,
        "depth_metric": "taylor",
        "num_hidden_layers": len(acc.layers),
        "hidden_size": mc.hidden_size,
        "intermediate_size": mc.intermediate_size,
        "num_attention_heads": acc.n_q,
        "num_key_value_heads": acc.n_kv,
    }
    return ImportanceScores(
        neurons=acc.neurons,
        heads=acc.heads,
        channels=acc.channels,
        layers=acc.layer_scores,
        metadata=metadata,
    )
