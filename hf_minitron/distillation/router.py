"""A mixture-of-experts student's router load-balancing loss, added to the distillation loss when its config asks."""

from __future__ import annotations

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)


def router_aux_coefficient(config) -> float:
    """`router_aux_loss_coef` when the config enables the loss (`output_router_logits` true and a nonzero
    coefficient, as transformers' MoE LMs do when given labels), else 0.0."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if not (getattr(text, "output_router_logits", False) or getattr(config, "output_router_logits", False)):
        return 0.0
    coef = getattr(text, "router_aux_loss_coef", None)
    if coef is None:
        coef = getattr(config, "router_aux_loss_coef", None)
    return float(coef or 0.0)


def add_router_aux_loss(
    total: torch.Tensor, outputs, config, count: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`(total + coef x aux_loss x count, aux_loss x count)`, or `(total, None)` when the loss is off.

    `total` is a loss summed over the `count` positions that count (the trainer divides it by the tokens of the
    whole accumulated batch), so the batch's load-balancing loss (a mean, `outputs.aux_loss`: the family's own
    Switch-Transformer loss over all MoE layers, padding excluded) is weighted by its positions; the second value is
    what the trainer logs as the token-weighted mean `aux_loss` (unscaled, as transformers returns it).
    """
    coef = router_aux_coefficient(config)
    if coef == 0.0:
        return total, None
    aux = getattr(outputs, "aux_loss", None)
    if not isinstance(aux, torch.Tensor):
        logger.warning_once(
            f"router_aux_loss_coef={coef} with output_router_logits=True, but {config.model_type}'s forward returns "
            "no aux_loss (it defines no load-balancing loss): the distillation loss is used alone."
        )
        return total, None
    weighted = aux.to(total.device, total.dtype) * count.to(total.dtype)
    return total + coef * weighted, weighted.detach()
