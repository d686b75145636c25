"""`estimate_importance`: one calibration pass (plus loss passes for loss-based depth metrics)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from hf_minitron.architectures import get_spec
from hf_minitron.config import PruningConfig
from hf_minitron.importance.activation import ActivationObserver
from hf_minitron.importance.hooks import HookSet, TokenMask, all_reduce_statistics, skip_layers
from hf_minitron.importance.norms import NormInputObserver
from hf_minitron.importance.scores import ImportanceScores

_MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def requested_axes(model_config, config: PruningConfig | None) -> set[str]:
    """The dimension groups (and `"layers"`) a config needs scores for: all of them with `config=None`."""
    return (config or PruningConfig(target_params=1)).pruned_dimensions(model_config)


def estimate_importance(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None, config: PruningConfig | None = None
) -> ImportanceScores:
    """
    Score the components `config` asks to prune from calibration batches, with the criterion `config.importance`.

    Args:
        model (`PreTrainedModel`): A supported causal LM, any dtype or device (also dispatched with `device_map`).
        batches (`Iterable[dict]`): Dicts with `input_ids` and optionally `attention_mask` (padding is ignored);
            may be `None` for `importance="magnitude"` (given, one forward records the norm statistics of
            `ImportanceScores.norm_inputs` when the config rescales norms).
        config (`PruningConfig`, *optional*): What to prune; `None` scores every axis with the default criterion.

    Returns:
        `ImportanceScores` with the requested axes (others `None`). Layers are always ranked by
        `config.depth_metric`, whatever the width criterion.
    """
    criterion = (config or PruningConfig()).importance
    if config is not None:
        config.validate_for(model.config)
    axes = requested_axes(model.config, config)
    if criterion == "activation" or (axes <= {"layers"} and batches is not None):
        return _activation_importance(model, batches, config)  # depth alone needs no width criterion
    if batches is None and criterion != "magnitude":
        raise ValueError(f"batches=None is invalid for importance={criterion!r}: allowed calibration batches")
    batches = [] if batches is None else list(batches)  # reused by the depth metric below
    if criterion == "taylor":
        from hf_minitron.importance.taylor import estimate_taylor_importance

        scores = estimate_taylor_importance(model, batches, config or PruningConfig())
    else:
        from hf_minitron.importance.magnitude import estimate_magnitude_importance

        scores = estimate_magnitude_importance(model, config or PruningConfig())
        if batches and (config or PruningConfig()).norm_rescale_factor == "data":
            scores.norm_inputs = norm_input_statistics(model, batches, axes)  # for the data-aware rescale
    for axis in set(scores.tensors) - axes:  # only what the config asks for
        scores[axis] = None
    routed = {g.name for g in get_spec(model).groups if g.observe.at == "experts" and not g.within} & axes
    if (
        routed and batches
    ):  # experts are ranked by `expert_importance` (REAP by default), whatever the criterion
        base = config or PruningConfig()
        for name, value in _routed_scores(model, batches, routed, base).items():
            scores[name] = value
        scores.metadata["expert_importance"] = base.expert_importance
    if "layers" not in axes:
        scores.metadata.pop("depth_metric", None)
    n_layers = get_spec(model).shape(model.config)["num_hidden_layers"]
    if "layers" in axes and batches and n_layers > 1:
        base = config or PruningConfig()
        depth_only = PruningConfig(
            **{
                k: v
                for k, v in base.to_dict().items()
                if k in ("depth_metric", "batch_aggregation", "sequence_aggregation")
            },
            importance="activation",
            num_hidden_layers=base.num_hidden_layers or n_layers - 1,
        )
        depth = _activation_importance(model, batches, depth_only)
        scores.layers = depth.layers
        scores.metadata.update(
            {k: v for k, v in depth.metadata.items() if k in ("depth_metric", "contiguous_block")}
        )
    return scores


def _activation_importance(model: nn.Module, batches, config: PruningConfig | None) -> ImportanceScores:
    """Minitron's criterion: activation statistics from one hooked no-grad pass (plus loss passes for depth)."""
    spec = get_spec(model)
    if config is not None:
        config.validate_for(model.config)
    axes = requested_axes(model.config, config)
    config = config or PruningConfig()
    n_layers = len(spec.layers(model))
    metadata = _metadata(model, config)
    if not axes:
        return ImportanceScores(metadata=metadata)
    loss_metric = "layers" in axes and config.depth_metric != "block_importance"
    if loss_metric:
        batches = list(batches)
    observer = ActivationObserver(
        model,
        spec,
        axes if not loss_metric else axes - {"layers"},
        config.sequence_aggregation,
        config.expert_importance,
    )
    results: dict[str, torch.Tensor] = {}
    norm_inputs: dict[str, torch.Tensor] = {}
    with _eval_no_grad(model):
        if observer.statistics():
            with HookSet() as hooks:
                observer.register(hooks)
                n_samples = _forward(model, batches, observer, desc="importance")
            all_reduce_statistics(observer.statistics())
            results = observer.results(config.batch_aggregation)
            norm_inputs = observer.norm_inputs.results()
        if loss_metric:
            block = 1
            if config.depth_metric == "contiguous":
                block = n_layers - (config.num_hidden_layers or n_layers - 1)
                metadata["contiguous_block"] = block
            results["layers"], n_samples = _loss_depth_scores(model, spec.layers(model), batches, block)
    metadata["num_samples"] = n_samples
    scores = ImportanceScores(**results, metadata=metadata)
    scores.norm_inputs = norm_inputs
    return scores


def norm_input_statistics(
    model: nn.Module, batches, names: set[str] | None = None
) -> dict[str, torch.Tensor]:
    """The per-channel input mean square of the norms of groups `names` (`None`: all) from one hooked no-grad
    pass, as `ImportanceScores.norm_inputs` holds them (for scores computed without data, like magnitude)."""
    observer = NormInputObserver(model, get_spec(model), names, TokenMask())
    with _eval_no_grad(model), HookSet() as hooks:
        observer.register(hooks)
        _forward(model, batches, observer, desc="norm inputs")
    all_reduce_statistics(observer.statistics())
    return observer.results()


def _routed_scores(
    model: nn.Module, batches, names: set[str], config: PruningConfig
) -> dict[str, torch.Tensor]:
    """Expert rankings from one hooked no-grad pass (routing statistics, no gradients)."""
    observer = ActivationObserver(
        model, get_spec(model), names, config.sequence_aggregation, config.expert_importance
    )
    with _eval_no_grad(model), HookSet() as hooks:
        observer.register(hooks)
        _forward(model, batches, observer, desc="expert importance")
    all_reduce_statistics(observer.statistics())
    return observer.results(config.batch_aggregation)


def _metadata(model: nn.Module, config: PruningConfig) -> dict:
    return {
        "importance": "activation",
        "batch_aggregation": config.batch_aggregation,
        "sequence_aggregation": config.sequence_aggregation,
        "depth_metric": config.depth_metric,
        **({"expert_importance": config.expert_importance} if _has_experts(model) else {}),
        "model_type": model.config.model_type,
        **get_spec(model).shape(model.config),
    }


def _has_experts(model: nn.Module) -> bool:
    return any(g.observe.at == "experts" for g in get_spec(model).groups)


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _model_inputs(model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    device = model.get_input_embeddings().weight.device
    inputs = {k: batch[k].to(device) for k in _MODEL_INPUTS if batch.get(k) is not None}
    if "attention_mask" not in inputs:
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    return inputs


def _iterate(batches, desc: str):
    return tqdm(batches, desc=desc, disable=None, leave=False)


def _global_count(n: int) -> int:
    if dist.is_available() and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([n], device=device)
        dist.all_reduce(t)
        n = int(t.item())
    return n


def _check_not_empty(n_samples: int) -> None:
    if n_samples == 0:
        raise ValueError("batches=<empty> is invalid: allowed at least one calibration batch with input_ids")


def _forward(model: nn.Module, batches, observer: ActivationObserver, desc: str) -> int:
    """One hooked pass; logits only for the last position (the statistics do not need them)."""
    extra = {"use_cache": False}
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        extra["logits_to_keep"] = 1
    n_samples = 0
    for batch in _iterate(batches, desc):
        inputs = _model_inputs(model, batch)
        observer.mask.set(inputs["attention_mask"])
        model(**inputs, **extra)
        n_samples += inputs["input_ids"].shape[0]
    n_samples = _global_count(n_samples)
    _check_not_empty(n_samples)
    return n_samples


def lm_loss(model: nn.Module, batches, desc: str = "loss") -> tuple[float, int]:
    """Mean next-token cross-entropy over non-padded tokens (reduced across ranks), and the sample count.

    Chunked from the final hidden states (`hf_minitron.evaluation.lm_loss_sum`): no full-vocabulary logits.
    """
    from hf_minitron.evaluation import lm_loss_sum

    total, n_samples = None, 0
    for batch in _iterate(batches, desc):
        inputs = _model_inputs(model, batch)
        update = torch.stack(lm_loss_sum(model, **inputs))
        total = update if total is None else total + update
        n_samples += inputs["input_ids"].shape[0]
    n_samples = _global_count(n_samples)
    _check_not_empty(n_samples)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(total)
    total = total.cpu()
    return float(total[0] / total[1].clamp_min(1.0)), n_samples


def _loss_depth_scores(
    model: nn.Module, layers: nn.ModuleList, batches, block: int
) -> tuple[torch.Tensor, int]:
    """
    LM loss with layers skipped. `block == 1`: each layer's score is the loss without it ("perplexity").
    `block > 1` ("contiguous"): each window of `block` layers is skipped; a layer scores the lowest loss of the
    windows containing it, so the best window's layers score lowest and pruning picks that window.
    """
    n_layers = len(layers)
    window_losses = []
    for start in range(n_layers - block + 1):
        with skip_layers(layers, range(start, start + block)):
            loss, n_samples = lm_loss(
                model, batches, desc=f"loss without layers {start}..{start + block - 1}"
            )
        window_losses.append(loss)
    scores = torch.tensor(
        [min(window_losses[max(0, i - block + 1) : i + 1]) for i in range(n_layers)], dtype=torch.float32
    )
    return scores, n_samples
