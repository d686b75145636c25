"""Expert statistics read where a fused experts module computes (transformers' 3D expert tensors), in float32."""

from __future__ import annotations

import torch
from torch import nn

try:  # transformers' grouped matmul (torch.nn.functional.grouped_mm when it can, a loop otherwise)
    from transformers.integrations.moe import _grouped_linear
except ImportError:  # pragma: no cover - older or newer transformers
    _grouped_linear = None


class ExpertStatistic:
    """
    Streamed sums for one experts module: routed non-padded tokens per expert, their gate weights, REAP's
    gate x ||expert output||, and each expert's intermediate activation (|a| or a^2) per neuron; never activations.
    """

    def __init__(self, num_experts: int, width: int, squares: bool):
        self.squares = squares
        self.count = torch.zeros(num_experts)
        self.gate = torch.zeros(num_experts)
        self.saliency = torch.zeros(num_experts)
        self.activation = torch.zeros(num_experts, width)
        self.tokens = torch.zeros(1)

    def _to(self, device) -> None:
        if self.count.device != device:
            for name in ("count", "gate", "saliency", "activation", "tokens"):
                setattr(self, name, getattr(self, name).to(device))

    def tensors(self) -> list[torch.Tensor]:
        return [self.count, self.gate, self.saliency, self.activation, self.tokens]

    def load(self, tensors: list[torch.Tensor]) -> None:
        self.count, self.gate, self.saliency, self.activation, self.tokens = tensors

    def experts(self, criterion: str) -> torch.Tensor:
        """Per-expert importance: REAP's mean gate x output norm over routed tokens, routing frequency, or the
        mean gate weight over all tokens (0 where not routed)."""
        count, tokens = self.count.cpu(), self.tokens.cpu().clamp_min(1.0)
        if criterion == "reap":
            return self.saliency.cpu() / count.clamp_min(1.0)
        if criterion == "frequency":
            return count / tokens
        return self.gate.cpu() / tokens

    def neurons(self) -> torch.Tensor:
        """Per-expert, per-neuron mean |activation| (RMS with squares) over the tokens routed to that expert."""
        mean = self.activation.cpu() / self.count.cpu().clamp_min(1.0).unsqueeze(1)
        return mean.sqrt() if self.squares else mean


def _linear(x, weight, offsets, bias, transposed: bool) -> torch.Tensor:
    """Rows of `x` sorted by expert, each multiplied by its expert's matrix (`offsets`: cumulative counts)."""
    if _grouped_linear is not None:
        return _grouped_linear(x, weight, offsets, bias=bias, is_transposed=transposed)
    out, start = [], 0
    for e, end in enumerate(offsets.tolist()):
        w = weight[e] if transposed else weight[e].T
        out.append(x[start:end] @ w)
        start = end
    out = torch.cat(out)
    return out + bias if bias is not None else out


def observed_experts_forward(module: nn.Module, stat: ExpertStatistic, mask_of):
    """The observing forward for this experts module's layout (see the two below)."""
    if hasattr(module, "has_gate"):
        return _routed_forward(module, stat, mask_of)
    return _dense_forward(module, stat, mask_of)


def _dense_forward(module: nn.Module, stat: ExpertStatistic, mask_of):
    """Experts without layout flags that run every expert on every token, fed router-scaled inputs (Llama 4:
    `[E * tokens, H]` in, `[E, H, 2I]` with [gate | up] columns, `[E, I, H]`): a token is routed to an expert when
    its input row is not zero; the gate weight is folded into that input, so REAP's saliency is the norm of the
    expert's output and the gate statistic is the routed share."""

    def forward(hidden_states: torch.Tensor):
        n_experts, hidden = module.gate_up_proj.shape[0], module.gate_up_proj.shape[1]
        x = hidden_states.view(n_experts, -1, hidden)
        gate, up = torch.bmm(x, module.gate_up_proj).chunk(2, dim=-1)
        h = up * module.act_fn(gate)
        out = torch.bmm(h, module.down_proj)
        stat._to(x.device)
        mask = mask_of(x.shape[1], x.device)
        routed = (x != 0).any(-1).float() * mask  # [E, tokens]
        a = h.float().abs()
        stat.activation += torch.einsum("et,eti->ei", routed, a * a if stat.squares else a)
        stat.count += routed.sum(1)
        stat.gate += routed.sum(1)
        stat.saliency += (torch.linalg.vector_norm(out.float(), dim=-1) * routed).sum(1)
        stat.tokens += mask.sum()
        return out.view(-1, hidden)

    return forward


def _routed_forward(module: nn.Module, stat: ExpertStatistic, mask_of):
    """A forward for a transformers experts module (layout flags `has_gate`, `has_bias`, `is_transposed`, its own
    `_apply_gate`) computing what the stock implementations compute, and folding the statistics into `stat`.
    `mask_of(n, device)` gives the float mask [n] of the flattened tokens (1 = not padding)."""

    def forward(hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor):
        n, k = top_k_index.shape
        device = hidden_states.device
        stat._to(device)
        ids = top_k_index.reshape(-1)
        weights = top_k_weights.reshape(-1)
        ids_sorted, order = torch.sort(ids, stable=True)
        tokens = order // k
        x = hidden_states[tokens]
        per_expert = torch.bincount(ids_sorted, minlength=module.num_experts)
        offsets = torch.cumsum(per_expert, 0).to(torch.int32)
        name = "gate_up_proj" if module.has_gate else "up_proj"
        bias = getattr(module, f"{name}_bias")[ids_sorted] if module.has_bias else None
        h = _linear(x, getattr(module, name), offsets, bias, module.is_transposed)
        h = module._apply_gate(h) if module.has_gate else module.act_fn(h)
        bias = module.down_proj_bias[ids_sorted] if module.has_bias else None
        out = _linear(h, module.down_proj, offsets, bias, module.is_transposed)
        if getattr(module, "has_post_expert_norm", False):
            out = module.post_expert_norm(out)
        w = weights[order]
        # statistics over routed, non-padded (token, expert) pairs, float32
        mask = mask_of(n, device)
        m = mask[tokens]
        a = h.float().abs()
        stat.activation.index_add_(0, ids_sorted, (a * a if stat.squares else a) * m.unsqueeze(1))
        stat.count.index_add_(0, ids_sorted, m)
        stat.gate.index_add_(0, ids_sorted, w.float() * m)
        norms = torch.linalg.vector_norm(out.float(), dim=-1)
        stat.saliency.index_add_(0, ids_sorted, w.float() * norms * m)
        stat.tokens += mask.sum()
        weighted = out * w.unsqueeze(-1).to(out.dtype)
        final = torch.zeros(n, hidden_states.shape[-1], device=device, dtype=weighted.dtype)
        final.index_add_(0, tokens, weighted)
        return final.to(hidden_states.dtype)

    return forward
