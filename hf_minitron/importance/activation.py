"""Activation-based importance (Minitron): forward hooks where each dimension group declares its observation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hf_minitron.architectures import ArchitectureSpec
from hf_minitron.architectures.dimensions import applies, expand, rows_of, unit_shape
from hf_minitron.architectures.spec import text_config
from hf_minitron.importance.experts import ExpertStatistic, observed_experts_forward
from hf_minitron.importance.hooks import (
    HookSet,
    SampleStatistic,
    TokenMask,
    TokenMean,
    first_arg,
    main_output,
    per_sample,
)
from hf_minitron.importance.norms import NormInputObserver


class ActivationObserver:
    """
    Hooks one calibration pass. Each requested group is read where its spec says (MLP neurons: the
    down-projection input; heads: per-head L2 norm of the output-projection input; channels: the outputs of every
    hidden-size norm, summed), and with `"layers"` Block Importance (1 - cosine of each layer's input and output)
    is measured in the same pass. Groups observed `"experts"` are read inside each fused experts module's
    computation: the expert ranking (`expert_importance`: REAP saliency, routing frequency or mean gate weight)
    for a group of experts, each expert's intermediate activation over its routed tokens for a group `within`
    the experts.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ArchitectureSpec,
        names: set[str],
        sequence_aggregation: str,
        expert_importance: str = "reap",
    ):
        self.model, self.spec = model, spec
        self.sequence_aggregation = sequence_aggregation
        self.expert_importance = expert_importance
        self.mask = TokenMask()
        layers = spec.layers(model)
        self._shape = spec.shape(model.config)
        config = text_config(model.config)
        kinds = spec.layer_kinds(model.config)
        # (module, statistic, entries per unit) to hook; statistics grouped per group and per layer (or model)
        self._plan: list[tuple[nn.Module, SampleStatistic, int, str]] = []
        self._stats: dict[str, list[list[SampleStatistic]]] = {}
        self._experts: dict[nn.Module, ExpertStatistic] = {}  # one per experts module, shared by its groups
        self._rows_of_layers: dict[str, list[int]] = {}  # a hybrid group's layers (the others score zeros)
        for group in spec.groups:
            if group.name not in names:
                continue
            rows, at = rows_of(group.observe.rows, config), group.observe.at
            if group.scope == "layer":
                own = [i for i in range(len(layers)) if kinds is None or applies(group.layer_kinds, kinds[i])]
                self._rows_of_layers[group.name] = own
                roots = [(layers[i], list(group.observe.modules)) for i in own]
            else:
                paths = [q for p in group.observe.modules for q in expand(p, len(layers), kinds)]
                roots = [(model, paths)]
            self._stats[group.name] = []
            for root, paths in roots:
                if group.observe.optional:
                    paths = [p for p in paths if _has_module(root, p)]
                modules = [root.get_submodule(p) for p in paths]
                if at == "experts":
                    self._stats[group.name].append([self._expert_stat(m) for m in modules])
                    continue
                stats = [SampleStatistic() for _ in paths]
                self._stats[group.name].append(stats)
                self._plan += [(m, s, rows, at) for m, s in zip(modules, stats)]
        self.blocks = [TokenMean() for _ in range(len(layers))] if "layers" in names else []
        self.norm_inputs = NormInputObserver(model, spec, names, self.mask)  # for the data-aware gain rescale
        self._block_inputs: dict[int, torch.Tensor] = {}

    def _expert_stat(self, module: nn.Module) -> ExpertStatistic:
        if module not in self._experts:
            transposed = getattr(module, "is_transposed", True)  # no layout flags: [E, I, H] (Llama 4)
            width = module.down_proj.shape[1 if transposed else 2]
            squares = self.sequence_aggregation == "l2"
            self._experts[module] = ExpertStatistic(module.num_experts, width, squares)
        return self._experts[module]

    def _mask_of(self, n: int, device) -> torch.Tensor:
        mask = self.mask.get(device)[0].reshape(-1)
        return mask if mask.numel() == n else torch.ones(n, device=device)

    def statistics(self) -> list:
        return (
            [s for _, s, _, _ in self._plan]
            + list(self._experts.values())
            + self.blocks
            + self.norm_inputs.statistics()
        )

    # ------------------------------------------------------------------ hooks
    def _observe(self, stat: SampleStatistic, x: torch.Tensor, rows: int) -> None:
        if rows > 1:  # a unit of several entries (a head): its L2 norm over them
            x = torch.linalg.vector_norm(x.float().unflatten(-1, (-1, rows)), dim=-1)
        mask, count = self.mask.get(x.device)
        if x.dim() == 2 and x.shape[0] == mask.numel():  # tokens flattened (a MoE block's shared expert)
            x = x.reshape(*mask.shape, -1)
        stat.add(per_sample(x, mask, count, self.sequence_aggregation))

    def _input_hook(self, stat, rows):
        return lambda module, args: self._observe(stat, args[0], rows)

    def _output_hook(self, stat, rows):
        return lambda module, args, output: self._observe(stat, main_output(output), rows)

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
        self.norm_inputs.register(hooks)
        for module, stat in self._experts.items():
            hooks.patch(module, observed_experts_forward(module, stat, self._mask_of))
        for module, stat, rows, at in self._plan:
            if at == "input":
                hooks.pre(module, self._input_hook(stat, rows))
            else:
                hooks.post(module, self._output_hook(stat, rows))
        if self.blocks:
            for i, layer in enumerate(self.spec.layers(self.model)):
                hooks.pre(layer, self._block_pre_hook(i), with_kwargs=True)
                hooks.post(layer, self._block_hook(i))

    # ------------------------------------------------------------------ results
    def results(self, batch_aggregation: str) -> dict[str, torch.Tensor]:
        out = {}
        n_layers = len(self.spec.layers(self.model))
        for name, per_root in self._stats.items():
            group = self.spec.group(name)
            summed = [
                torch.stack([self._result(group, s, batch_aggregation) for s in stats]).sum(0)
                if stats
                else torch.zeros(unit_shape(group, self._shape))  # a layer without this module
                for stats in per_root
            ]
            if group.scope != "layer":
                out[name] = summed[0]
                continue
            own = self._rows_of_layers[name]
            if len(own) == n_layers:
                out[name] = torch.stack(summed)
            else:  # a hybrid group: zero rows for the layers of other kinds
                out[name] = torch.zeros(n_layers, *unit_shape(group, self._shape))
                for i, row in zip(own, summed):
                    out[name][i] = row
        if self.blocks:
            out["layers"] = torch.tensor([b.result() for b in self.blocks], dtype=torch.float32)
        return out

    def _result(self, group, stat, batch_aggregation: str) -> torch.Tensor:
        if isinstance(stat, ExpertStatistic):
            return stat.neurons() if group.within else stat.experts(self.expert_importance)
        return stat.result(batch_aggregation)


def _has_module(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
    except AttributeError:
        return False
    return True
