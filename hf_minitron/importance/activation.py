"""Activation-based importance (Minitron): forward hooks that score neurons, heads, channels and layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hf_minitron.architectures import ArchitectureSpec
from hf_minitron.config import attention_shape
from hf_minitron.importance.hooks import (
    HookSet,
    SampleStatistic,
    TokenMask,
    TokenMean,
    first_arg,
    main_output,
    per_sample,
)


class ActivationObserver:
    """
    Hooks one calibration pass: MLP neurons (down-projection input), attention heads (per-head L2 norm of the
    output-projection input), embedding channels (outputs of every hidden-size norm, summed over norms) and,
    when `blocks`, Block Importance (1 - cosine of each layer's input and output) in the same pass.
    """

    def __init__(self, model: nn.Module, spec: ArchitectureSpec, axes: set[str], sequence_aggregation: str):
        self.model, self.spec, self.axes = model, spec, axes
        self.sequence_aggregation = sequence_aggregation
        self.mask = TokenMask()
        n_layers = len(spec.layers(model))
        self.neurons = [SampleStatistic() for _ in range(n_layers)] if "neurons" in axes else []
        self.heads = [SampleStatistic() for _ in range(n_layers)] if "heads" in axes else []
        n_norms = n_layers * len(spec.layer_norms) + 1
        self.channels = [SampleStatistic() for _ in range(n_norms)] if "channels" in axes else []
        self.blocks = [TokenMean() for _ in range(n_layers)] if "layers" in axes else []
        self._block_inputs: dict[int, torch.Tensor] = {}

    def statistics(self) -> list:
        return [*self.neurons, *self.heads, *self.channels, *self.blocks]

    # ------------------------------------------------------------------ hooks
    def _observe(self, stat: SampleStatistic, x: torch.Tensor) -> None:
        mask, count = self.mask.get(x.device)
        stat.add(per_sample(x, mask, count, self.sequence_aggregation))

    def _neuron_hook(self, stat):
        return lambda module, args: self._observe(stat, args[0])

    def _head_hook(self, stat, head_dim):
        def hook(module, args):
            x = args[0]
            per_head = torch.linalg.vector_norm(x.float().unflatten(-1, (-1, head_dim)), dim=-1)
            self._observe(stat, per_head)

        return hook

    def _channel_hook(self, stat):
        return lambda module, args, output: self._observe(stat, main_output(output))

    def _block_pre_hook(self, i):
        def hook(module, args, kwargs):
            self._block_inputs[i] = first_arg(args, kwargs)

        return hook

    def _block_hook(self, i):
        def hook(module, args, output):
            out = main_output(output)
            inp = self._block_inputs.pop(i).to(out.device)
            cos = F.cosine_similarity(inp.float(), out.float(), dim=-1)
            self.blocks[i].add(1.0 - cos, self.mask.get(out.device)[0])

        return hook

    def register(self, hooks: HookSet) -> None:
        spec, layers = self.spec, self.spec.layers(self.model)
        head_dim = attention_shape(self.model.config)[2]
        norms = []
        for i, layer in enumerate(layers):
            if self.neurons:
                down = spec.mlp_module(layer).get_submodule(spec.down_proj)
                hooks.pre(down, self._neuron_hook(self.neurons[i]))
            if self.heads:
                hooks.pre(
                    spec.attn(layer).get_submodule(spec.o_proj), self._head_hook(self.heads[i], head_dim)
                )
            if self.blocks:
                hooks.pre(layer, self._block_pre_hook(i), with_kwargs=True)
                hooks.post(layer, self._block_hook(i))
            norms += spec.norm_modules(layer)
        norms.append(spec.final_norm(self.model))
        for stat, norm in zip(self.channels, norms):
            hooks.post(norm, self._channel_hook(stat))

    # ------------------------------------------------------------------ results
    def results(self, batch_aggregation: str) -> dict[str, torch.Tensor]:
        out = {}
        if self.neurons:
            out["neurons"] = torch.stack([s.result(batch_aggregation) for s in self.neurons])
        if self.heads:
            out["heads"] = torch.stack([s.result(batch_aggregation) for s in self.heads])
        if self.channels:
            out["channels"] = torch.stack([s.result(batch_aggregation) for s in self.channels]).sum(0)
        if self.blocks:
            out["layers"] = torch.tensor([b.result() for b in self.blocks], dtype=torch.float32)
        return out
