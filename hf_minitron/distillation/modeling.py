"""What the distillation trainer reads from the models: output heads, final norms, depths, layer pairs."""

from __future__ import annotations

import torch
from torch import nn
from transformers.utils import logging

from .chunked import LogitHead

logger = logging.get_logger(__name__)


def logit_transform(config) -> tuple[float, float | None]:
    """`(scale, softcap)` that a model's forward applies to its `lm_head` output.

    Architecture data, kept in this one place: Granite divides logits by `logits_scaling`, Cohere multiplies them by
    `logit_scale` and Falcon-H1 by `lm_head_multiplier`, Gemma 2/3 soft-cap them at `final_logit_softcapping`.
    (Move to `hf_minitron.architectures` if the list grows.)
    """
    config = config.get_text_config()
    scale = 1.0
    if getattr(config, "logits_scaling", None):
        scale /= float(config.logits_scaling)
    if getattr(config, "logit_scale", None):
        scale *= float(config.logit_scale)
    if getattr(config, "lm_head_multiplier", None):  # Falcon-H1
        scale *= float(config.lm_head_multiplier)
    softcap = getattr(config, "final_logit_softcapping", None)
    return scale, (float(softcap) if softcap else None)


def base_model(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder(model: nn.Module) -> nn.Module:
    """The decoder trunk under a PEFT wrapper (see `architectures.spec.decoder_of`: Llama 4's `get_decoder()`)."""
    from hf_minitron.architectures.spec import decoder_of

    return decoder_of(base_model(model))


def output_vocab(model: nn.Module) -> int:
    """Number of rows of the output embedding (the vocabulary the model predicts over)."""
    return base_model(model).get_output_embeddings().weight.shape[0]


def logit_head(model: nn.Module, vocab: int | None = None, trainable: bool = False) -> LogitHead:
    """The model's `lm_head` as a `LogitHead`.

    Under FSDP2 a resharded head weight is a DTensor: for the student (`trainable`) the FSDP unit that owns it is
    unsharded (FSDP's own all-gather), so that the gradient lands on FSDP's unsharded parameter and FSDP
    reduce-scatters it after backward, as for any parameter used in forward; for the teacher (no gradient) the head
    is gathered with `full_tensor()` for this step only.
    """
    model = base_model(model)
    head = model.get_output_embeddings()
    if trainable and hasattr(head.weight, "full_tensor"):
        owner = _fsdp_owner(model, head)
        if owner is not None:
            owner.unshard()
    weight, bias = head.weight, getattr(head, "bias", None)
    if hasattr(weight, "full_tensor"):
        weight = weight.full_tensor()
        bias = bias.full_tensor() if hasattr(bias, "full_tensor") else bias
    scale, softcap = logit_transform(model.config)
    embeddings = model.get_input_embeddings()
    tied = embeddings is not None and getattr(embeddings, "weight", None) is head.weight
    return LogitHead(weight, bias, scale, softcap, vocab, tied=tied)


def _fsdp_owner(model: nn.Module, module: nn.Module) -> nn.Module | None:
    """The FSDP2 unit whose parameter group holds `module`'s parameters: its nearest `fully_shard`-ed ancestor."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return None
    path = next((n for n, m in model.named_modules() if m is module), None)
    if path is None:
        return None
    owners = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, FSDPModule) and (n == "" or path == n or path.startswith(n + "."))
    ]
    return max(owners, key=lambda item: len(item[0]))[1] if owners else None


def check_logit_head(model: nn.Module, who: str, vocab: int | None = None, num_tokens: int = 8) -> None:
    """Refuse a model whose forward turns hidden states into logits otherwise than its `LogitHead` does.

    The chunked loss rebuilds logits from the final hidden states with `lm_head`, the scale and the soft-cap that
    `logit_transform` knows; a family with another transform (e.g. a `lm_head_multiplier`) would otherwise be
    distilled against wrong logits silently. One forward on `num_tokens` tokens, compared with `model(...).logits`.
    """
    inner = base_model(model)
    weight = inner.get_input_embeddings().weight
    if weight.device.type == "meta" or weight.numel() == 0 or hasattr(weight, "ds_id"):
        logger.info("Skipping the logit-head check of the %s: its weights are not materialized here.", who)
        return
    ids = (torch.arange(1, num_tokens + 1, device=weight.device) * 7919 % (vocab or output_vocab(model)))[
        None
    ]
    with torch.no_grad():
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
        got = logit_head(model, vocab).logits(out.hidden_states[-1][0])
        want = out.logits[0, :, : got.shape[-1]].float()
    low_precision = {out.logits.dtype, got.dtype, weight.dtype} & {torch.float16, torch.bfloat16}
    tol = (2e-2 if low_precision else 1e-4) * (1.0 + want.abs().max().item())
    diff = (got - want).abs().max().item()
    if not diff <= tol:
        scale, softcap = logit_transform(inner.config)
        raise ValueError(
            f"The {who}'s logits ({type(inner).__name__}) are not lm_head(final hidden states) * {scale:g}"
            + (f" soft-capped at {softcap:g}" if softcap else "")
            + f": max difference {diff:.4g} > tolerance {tol:.4g} on a test batch. Its forward applies a logit "
            "transform that hf-minitron's chunked loss does not know; distilling would use wrong logits. Add the "
            "family's transform to hf_minitron.distillation.modeling.logit_transform."
        )


def load_teacher(name_or_path: str, init_kwargs: dict | None = None) -> nn.Module:
    """A teacher given by Hub id or path, loaded with `AutoModelForCausalLM.from_pretrained(**init_kwargs)`.

    A string `dtype` (or `torch_dtype`) such as "bfloat16" is turned into the torch dtype; "auto" is kept.
    """
    from transformers import AutoModelForCausalLM

    kwargs = dict(init_kwargs or {})
    for key in ("dtype", "torch_dtype"):
        value = kwargs.get(key)
        if isinstance(value, str) and value != "auto":
            dtype = getattr(torch, value, None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"teacher_model_init_kwargs[{key!r}]={value!r} is not a torch dtype name.")
            kwargs[key] = dtype
    return AutoModelForCausalLM.from_pretrained(name_or_path, **kwargs)


def final_norm(model: nn.Module) -> nn.Module:
    """The model's final normalization layer (applied to intermediate states for the hidden-state loss)."""
    model = base_model(model)
    try:
        from hf_minitron.architectures import get_spec

        return get_spec(model).final_norm(model)
    except (ImportError, KeyError, ValueError, AttributeError):
        norm = getattr(decoder(model), "norm", None)
        if norm is None:
            raise ValueError(
                f"Cannot find the final norm of {type(model).__name__} for the hidden-state loss."
            ) from None
        return norm


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers of a causal LM (`decoder(model).layers`)."""
    layers = getattr(decoder(model), "layers", None)
    if layers is None:
        raise ValueError(
            f"Cannot find the decoder layers of {type(base_model(model)).__name__} for the hidden-state loss."
        )
    return layers


def num_layers(model_or_config) -> int:
    config = getattr(model_or_config, "config", model_or_config)
    return int(config.get_text_config().num_hidden_layers)


def hidden_size(model_or_config) -> int:
    config = getattr(model_or_config, "config", model_or_config)
    return int(config.get_text_config().hidden_size)


def default_layer_mapping(
    student_layers: int, teacher_layers: int, kept_layers: list[int] | None = None
) -> dict:
    """Minitron's pair: the student's third-from-last layer and the matching teacher layer.

    When the student was depth-pruned from this teacher (`kept_layers[i]` = the teacher layer that became student layer
    i), student layer i is paired with the teacher layer whose output feeds the next surviving layer
    (`kept_layers[i + 1] - 1`); otherwise both are counted from the end (the teacher's third-from-last layer).
    """
    i = max(student_layers - 3, 0)
    if kept_layers is not None and len(kept_layers) == student_layers:
        return {i: kept_layers[i + 1] - 1 if i + 1 < student_layers else teacher_layers - 1}
    return {i: teacher_layers - (student_layers - i)}


def resolve_layer_pairs(
    mapping: dict[int, int], student_layers: int, teacher_layers: int
) -> list[tuple[int, int]]:
    """Validated `(student_layer, teacher_layer)` pairs with negative indices resolved; ValueError when out of range."""
    pairs = []
    for s, t in mapping.items():
        for who, idx, depth in (("student", s, student_layers), ("teacher", t, teacher_layers)):
            if not -depth <= idx < depth:
                raise ValueError(
                    f"layer_mapping {s}->{t}: {who} layer {idx} is out of range, the {who} has {depth} layers."
                )
        pairs.append((s % student_layers, t % teacher_layers))
    return sorted(pairs)


def layer_states(
    hidden_states: tuple[torch.Tensor, ...], layer: int, depth: int, norm: nn.Module
) -> torch.Tensor:
    """Post-norm output of decoder `layer` from an `output_hidden_states` tuple (entry 0 = embeddings).

    The last entry is already the final-normed `last_hidden_state` in transformers; the others get the final norm.
    """
    states = hidden_states[layer + 1]
    return states if layer == depth - 1 else norm(states)
