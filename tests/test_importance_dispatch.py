"""Importance on a model really split by accelerate: half the layers offloaded (weights on the meta device, loaded
at execution), and a CUDA + CPU split where a GPU exists. Scores must equal the undispatched model's."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import random_batches, tiny_model

from hf_minitron import PruningConfig, estimate_importance
from hf_minitron.importance.hooks import TokenMask

AXES = ("neurons", "heads", "channels", "layers")


def _offloaded(model, tmp_path, offload_head: bool):
    """Layers 0-1 (and the embedding) on the CPU, layers 2-3 (and the head) offloaded: their weights sit on meta."""
    from accelerate import dispatch_model

    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu"}
    device_map.update({f"model.layers.{i}": "cpu" if i < 2 else "disk" for i in range(4)})
    device_map["lm_head"] = "disk" if offload_head else "cpu"
    dispatched = dispatch_model(model, device_map=device_map, main_device="cpu", offload_dir=str(tmp_path))
    devices = {p.device.type for p in dispatched.parameters()}
    assert devices == {"cpu", "meta"}, devices  # really split
    return dispatched


def _scored(scores) -> dict[str, torch.Tensor]:
    """Every scored tensor by name (the named axes, or all dimension groups where scores keep a `tensors` dict)."""
    names = set(AXES) | set(getattr(scores, "tensors", None) or {})
    return {n: getattr(scores, n) for n in sorted(names) if getattr(scores, n) is not None}


def _assert_same(got, ref, **tolerance):
    got, ref = _scored(got), _scored(ref)
    assert set(got) == set(ref) and ref
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], msg=name, **tolerance)


@pytest.mark.parametrize(
    "config",
    [
        PruningConfig(hidden_size=48, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3),
        PruningConfig(
            hidden_size=48, num_hidden_layers=3, importance="activation", depth_metric="perplexity"
        ),
    ],
    ids=["block_importance", "perplexity"],
)
def test_offloaded_model_gives_the_same_activation_scores(config, tmp_path, monkeypatch):
    config = PruningConfig(**{**config.to_dict(), "importance": "activation"})
    batches = random_batches(n=2, pad_last=5)  # padding: the mask matters
    model = tiny_model("llama")
    ref = estimate_importance(copy.deepcopy(model), batches, config)
    seen = []
    get = TokenMask.get
    monkeypatch.setattr(TokenMask, "get", lambda self, device: seen.append(device) or get(self, device))
    got = estimate_importance(_offloaded(model, tmp_path, offload_head=True), batches, config)
    assert seen  # the per-device mask path ran
    _assert_same(got, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU for a CUDA + CPU split")
def test_cuda_and_cpu_split_gives_the_same_scores():
    from accelerate import dispatch_model

    model = tiny_model("llama")
    batches = random_batches(n=2, pad_last=5)
    config = PruningConfig(hidden_size=48, intermediate_size=64, num_attention_heads=4, num_hidden_layers=3,
                           importance="activation", depth_metric="perplexity")  # fmt: skip
    ref = estimate_importance(copy.deepcopy(model), batches, config)
    device_map = {"model.embed_tokens": 0, "model.rotary_emb": 0, "model.norm": "cpu", "lm_head": "cpu"}
    device_map.update({f"model.layers.{i}": 0 if i < 2 else "cpu" for i in range(4)})
    dispatched = dispatch_model(model, device_map=device_map)
    seen = set()
    get = TokenMask.get
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            TokenMask, "get", lambda self, device: seen.add(torch.device(device).type) or get(self, device)
        )
        got = estimate_importance(dispatched, batches, config)
    assert seen == {"cuda", "cpu"}
    _assert_same(got, ref, rtol=1e-4, atol=1e-5)
