"""Per-channel input energy of the norms whose statistic spans a pruned dim, for the data-aware gain rescale."""

from __future__ import annotations

import torch
from torch import nn

from hf_minitron.architectures import ArchitectureSpec
from hf_minitron.architectures.dimensions import applies, expand
from hf_minitron.importance.hooks import HookSet, TokenMask, first_arg


def is_centered(norm: nn.Module) -> bool:
    """Whether a norm subtracts the token mean before its statistic (a LayerNorm, not an RMSNorm)."""
    return isinstance(norm, nn.LayerNorm) or "rms" not in type(norm).__name__.lower()


class NormInputStatistic:
    """Streams a norm input [B, T, D] into its per-channel sum of squares over non-padded tokens (float32),
    centered on each token's mean over the channels for a LayerNorm, and the token count."""

    def __init__(self, centered: bool):
        self.centered = centered
        self.total: torch.Tensor | None = None

    def add(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        x = x.detach().float()
        if self.centered:
            x = x - x.mean(-1, keepdim=True)
        x = x.reshape(-1, x.shape[-1])
        m = mask.reshape(-1).to(x.device) if mask.numel() == x.shape[0] else x.new_ones(x.shape[0])
        update = torch.cat([m @ x.pow(2), m.sum().reshape(1)])  # sum of squares per channel, then tokens
        self.total = update if self.total is None else self.total + update.to(self.total.device)

    def tensors(self) -> list[torch.Tensor]:
        return [self.total]

    def load(self, tensors: list[torch.Tensor]) -> None:
        (self.total,) = tensors

    def result(self) -> torch.Tensor:
        """Per-channel mean square over the observed tokens."""
        total = self.total.cpu()
        return total[:-1] / total[-1].clamp_min(1.0)


class NormInputObserver:
    """
    Records, in a forward pass it shares, the per-channel input mean square of every norm that owns an
    `rms_width=True` slice of the groups `names` (every layer's hidden-size norms and the final norm, OLMo 2's
    full-width q/k norms), keyed by the norm's module path in the model as scored (original layer indices).
    """

    def __init__(self, model: nn.Module, spec: ArchitectureSpec, names: set[str] | None, mask: TokenMask):
        self.mask = mask
        layers = spec.layers(model)
        kinds = spec.layer_kinds(model.config)
        path_of = {m: p for p, m in model.named_modules()}
        self.norms: dict[str, tuple[nn.Module, NormInputStatistic]] = {}
        for group in spec.groups:
            if names is not None and group.name not in names:
                continue
            for s in group.slices:
                if s.rms_width is not True:  # per-group widths (Mamba-2's gated norm) keep the fixed factor
                    continue
                if group.scope == "layer":
                    own = [
                        i for i in range(len(layers)) if kinds is None or applies(group.layer_kinds, kinds[i])
                    ]
                    roots = [(layers[i], s.path) for i in own]
                else:
                    roots = [(model, p) for p in expand(s.path, len(layers), kinds, s.layer_kinds)]
                for root, path in roots:
                    try:
                        module = root.get_submodule(path.rsplit(".", 1)[0])
                    except AttributeError:
                        continue  # an optional slice this layer does not have
                    if module in path_of and path_of[module] not in self.norms:
                        self.norms[path_of[module]] = (module, NormInputStatistic(is_centered(module)))

    def statistics(self) -> list[NormInputStatistic]:
        return [s for _, s in self.norms.values()]

    def register(self, hooks: HookSet) -> None:
        for module, stat in self.norms.values():
            hooks.pre(module, self._hook(stat), with_kwargs=True)

    def _hook(self, stat: NormInputStatistic):
        def hook(module, args, kwargs):
            stat.add(first_arg(args, kwargs), self.mask.get(first_arg(args, kwargs).device)[0])

        return hook

    def results(self) -> dict[str, torch.Tensor]:
        """Module path -> per-channel mean square of its input (norms never called are left out)."""
        return {p: s.result() for p, (_, s) in self.norms.items() if s.total is not None}
