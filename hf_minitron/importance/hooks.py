"""Forward hooks inside a context manager, and streaming float32 statistics of what they observe."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn


class HookSet(contextlib.AbstractContextManager):
    """Registers forward (pre-)hooks and removes every one of them on exit, also when the body raises."""

    def __init__(self):
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._patched: list[tuple[nn.Module, str, Callable | None]] = []

    def pre(self, module: nn.Module, fn: Callable, with_kwargs: bool = False) -> None:
        self._handles.append(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))

    def post(self, module: nn.Module, fn: Callable) -> None:
        self._handles.append(module.register_forward_hook(fn))

    def patch(self, module: nn.Module, forward: Callable) -> None:
        """Run `forward` instead of the module's own until exit (hooks on the module still fire; under an
        accelerate dispatch hook the computation it wraps is replaced, so weights are still brought on device)."""
        name = (
            "_old_forward" if hasattr(module, "_hf_hook") and hasattr(module, "_old_forward") else "forward"
        )
        self._patched.append((module, name, module.__dict__.get(name)))
        setattr(module, name, forward)

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module, name, previous in reversed(self._patched):
            if previous is None:
                delattr(module, name)
            else:
                setattr(module, name, previous)
        self._patched.clear()


class TokenMask:
    """The current batch's attention mask as float32, cached per device (dispatched models span devices)."""

    def __init__(self):
        self._by_device: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mask: torch.Tensor | None = None

    def set(self, mask: torch.Tensor) -> None:
        self._mask = mask.float()
        self._by_device = {}

    def get(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask [B, T], non-padded token count per sample [B], at least 1) on `device`."""
        if device not in self._by_device:
            mask = self._mask.to(device, non_blocking=True)
            self._by_device[device] = (mask, mask.sum(1).clamp_min(1.0))
        return self._by_device[device]


def per_sample(
    x: torch.Tensor, mask: torch.Tensor, count: torch.Tensor, sequence_aggregation: str
) -> torch.Tensor:
    """Reduce `x` [B, T, D] over non-padded tokens to [B, D] in float32: mean of |x|, or L2 norm."""
    x = x.float()
    if sequence_aggregation == "mean":
        return torch.bmm(mask.unsqueeze(1), x.abs()).squeeze(1) / count.unsqueeze(1)
    return torch.bmm(mask.unsqueeze(1), x * x).squeeze(1).sqrt()


class SampleStatistic:
    """Streams per-sample vectors [B, D] into sums (float32) and combines them over samples at the end."""

    def __init__(self):
        self.total: torch.Tensor | None = None
        self.total_sq: torch.Tensor | None = None
        self.count = 0

    def add(self, values: torch.Tensor) -> None:
        if self.total is None:
            self.total = torch.zeros(values.shape[1:], dtype=torch.float32, device=values.device)
            self.total_sq = torch.zeros_like(self.total)
        self.total += values.sum(0).to(self.total.device)
        self.total_sq += (values * values).sum(0).to(self.total.device)
        self.count += values.shape[0]

    def tensors(self) -> list[torch.Tensor]:
        return [self.total, self.total_sq, torch.tensor([float(self.count)], device=self.total.device)]

    def load(self, tensors: list[torch.Tensor]) -> None:
        self.total, self.total_sq, count = tensors
        self.count = int(count.item())

    def result(self, batch_aggregation: str) -> torch.Tensor:
        """L2 over samples (sqrt of the sum of squares), mean, or variance; float32 on CPU."""
        total, total_sq, n = self.total.cpu(), self.total_sq.cpu(), max(self.count, 1)
        if batch_aggregation == "l2":
            return total_sq.sqrt()
        if batch_aggregation == "mean":
            return total / n
        return (total_sq / n - (total / n) ** 2).clamp_min(0.0)


def all_reduce_sum(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """CPU sums of `tensors` over `torch.distributed` ranks, in one collective (the inputs when not initialized)."""
    if not (dist.is_available() and dist.is_initialized()) or not tensors:
        return tensors
    parts = [t.detach().cpu() for t in tensors]
    flat = torch.cat([p.reshape(-1).to(torch.float64) for p in parts])
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )
    flat = flat.to(device)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    chunks = torch.split(flat.cpu(), [p.numel() for p in parts])
    return [c.reshape(p.shape).to(p.dtype) for c, p in zip(chunks, parts)]


def all_reduce_statistics(stats: list[SampleStatistic]) -> None:
    """Sum every statistic across `torch.distributed` ranks (no-op when not initialized)."""
    if not (dist.is_available() and dist.is_initialized()) or not stats:
        return
    summed = iter(all_reduce_sum([t for s in stats for t in s.tensors()]))
    for s in stats:
        s.load([next(summed) for _ in s.tensors()])


def first_arg(args: tuple, kwargs: dict, name: str = "hidden_states") -> torch.Tensor:
    """A module's main input, passed positionally or by keyword."""
    return args[0] if args else kwargs[name]


def main_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextlib.contextmanager
def skip_layers(layers: nn.ModuleList, indices) -> Iterator[None]:
    """Temporarily make the given decoder layers return their input unchanged (restored on exit)."""
    patched = [layers[i] for i in indices]
    for layer in patched:
        layer.forward = lambda *args, **kwargs: first_arg(args, kwargs)
    try:
        yield
    finally:
        for layer in patched:
            del layer.forward


class TokenMean:
    """Streams a per-token quantity into (sum over non-padded tokens, token count) and returns their mean."""

    def __init__(self):
        self.total: torch.Tensor | None = None

    def add(self, values: torch.Tensor, mask: torch.Tensor) -> None:
        update = torch.stack([(values.float() * mask).sum(), mask.sum()])
        self.total = update if self.total is None else self.total + update.to(self.total.device)

    def tensors(self) -> list[torch.Tensor]:
        return [self.total]

    def load(self, tensors: list[torch.Tensor]) -> None:
        (self.total,) = tensors

    def result(self) -> float:
        total = self.total.cpu()
        return float(total[0] / total[1].clamp_min(1.0))
