"""DistillationTrainer's hidden-state loss: which layers pair up, the learned projection, and the per-layer states."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from transformers.utils import logging

from . import modeling as M
from .losses import hidden_state_loss

logger = logging.get_logger(__name__)


def hidden_state_setup(
    student: nn.Module, teacher: nn.Module, args
) -> tuple[list, torch.Tensor | None, nn.Module | None]:
    """`(layer pairs, teacher channels to keep, learned projection)` for the hidden-state loss.

    The teacher's channels are selected when the student was width-pruned from this teacher (its `minitron` record
    names the kept channels); otherwise a student narrower than the teacher gets a learned `nn.Linear` projection.
    """
    if not args.uses_hidden_states and args.layer_mapping is None:
        return [], None, None
    s_layers, t_layers = M.num_layers(student), M.num_layers(teacher)
    record = getattr(M.base_model(student).config, "minitron", None) or {}
    from_this_teacher = record.get("source_num_hidden_layers") == t_layers
    kept_layers = record.get("kept_layers") if from_this_teacher else None
    mapping = args.layer_mapping or M.default_layer_mapping(s_layers, t_layers, kept_layers)
    pairs = M.resolve_layer_pairs(mapping, s_layers, t_layers)
    if not args.uses_hidden_states:
        logger.warning("layer_mapping is set but hidden_state_weight is 0: the hidden-state loss is off.")
        return pairs, None, None
    s_hidden, t_hidden = M.hidden_size(student), M.hidden_size(teacher)
    if s_hidden == t_hidden:
        return pairs, None, None
    kept = record.get("kept_hidden_channels")
    if kept is not None and len(kept) == s_hidden and record.get("source_hidden_size") == t_hidden:
        return pairs, torch.tensor(kept, dtype=torch.long), None
    dtype = next(M.base_model(student).parameters()).dtype
    return pairs, None, nn.Linear(s_hidden, t_hidden, bias=False, dtype=dtype)


@contextlib.contextmanager
def student_layer_states(
    student: nn.Module, layer_pairs: list, projection: nn.Module | None, enabled: bool
) -> Iterator[dict[int, torch.Tensor]]:
    """Collect `{layer: projection(final_norm(layer output))}` for the mapped student layers during forward.

    Forward hooks, so that the final norm and the learned projection (a submodule of the student) run inside the
    wrapped forward, where DDP, FSDP and DeepSpeed expect parameters to be used.
    """
    states: dict[int, torch.Tensor] = {}
    if not (enabled and layer_pairs):
        yield states
        return
    norm, layers = M.final_norm(student), M.decoder_layers(student)

    def hook(layer: int):
        def collect(module, args, output):
            out = norm(output[0] if isinstance(output, tuple) else output)
            if projection is not None:
                out = projection(out.to(projection.weight.dtype))
            states[layer] = out

        return collect

    def expose(module, args, output):
        # DDP with find_unused_parameters marks every parameter the forward's outputs do not reach as unused (and
        # then fails when its gradient arrives): return the states in the free `attentions` slot (a field, so
        # that DDP can rebuild the output type).
        if output.get("attentions") is None:
            output["attentions"] = tuple(states[k] for k in sorted(states))
        return output

    handles = [layers[s].register_forward_hook(hook(s)) for s in sorted({s for s, _ in layer_pairs})]
    handles.append(student.register_forward_hook(expose))
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


def hidden_state_sum(
    teacher: nn.Module,
    layer_pairs: list,
    teacher_channels: torch.Tensor | None,
    loss: str,
    s_states: dict[int, torch.Tensor],
    t_states,
    select: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Hidden-state loss `loss` summed over the positions `select` keeps, averaged over the layer pairs."""
    t_norm, t_depth = M.final_norm(teacher), M.num_layers(teacher)
    total = 0.0
    for s_layer, t_layer in layer_pairs:
        s = select(s_states[s_layer])
        with torch.no_grad():
            t = select(M.layer_states(t_states, t_layer, t_depth, t_norm))
        if teacher_channels is not None:
            t = t[:, teacher_channels.to(t.device)]
        total = total + hidden_state_loss(loss, s, t).sum()
    return total / len(layer_pairs)


def auto_weight(logit_sum: torch.Tensor, hs_sum: torch.Tensor, world_size: int) -> torch.Tensor:
    """Minitron's hidden-state weight L_logits / L_hidden over the global batch: the same ratio on every process as
    in one process."""
    sums = torch.stack([logit_sum.float(), hs_sum.float()])
    if world_size > 1 and torch.distributed.is_initialized():
        torch.distributed.all_reduce(sums)
    return sums[0] / sums[1] if sums[1] > 0 else sums.new_zeros(())
