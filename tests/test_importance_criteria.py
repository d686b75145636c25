"""Taylor and magnitude importance: zero-contribution units rank lowest, every axis scored, gradients freed."""

from __future__ import annotations

import pytest
import torch
from tiny_models import (
    ARCHITECTURES,
    attn_out,
    mlp_first,
    mlp_out,
    random_batches,
    text_config_of,
    tiny_model,
)

from hf_minitron.architectures import get_spec
from hf_minitron.importance.magnitude import estimate_magnitude_importance
from hf_minitron.importance.taylor import estimate_taylor_importance

HEAD_DIM, GROUP = 8, 2  # tiny models: head_dim 8, 8 query heads in 4 KV groups
NEURON, KV_GROUP, DEAD_LAYER, CHANNEL = 5, 2, 2, 7


def _model_with_dead_units(model_type):
    """A tiny model where neuron 5 of layer 1, KV group 2 of layer 0, layer 2 and channel 7 contribute nothing."""
    model = tiny_model(model_type)
    layers = model.get_decoder().layers
    inter = text_config_of(model).intermediate_size
    with torch.no_grad():
        firsts, fused = mlp_first(layers[1].mlp)
        for linear in firsts:
            rows = [NEURON, inter + NEURON] if fused else [NEURON]
            linear.weight[rows] = 0
            if linear.bias is not None:
                linear.bias[rows] = 0
        mlp_out(layers[1].mlp).weight[:, NEURON].zero_()
        attn = layers[0].self_attn
        kv = slice(KV_GROUP * HEAD_DIM, (KV_GROUP + 1) * HEAD_DIM)
        if hasattr(attn, "qkv_proj"):  # fused [q | k | v]
            v_rows = slice(12 * HEAD_DIM + kv.start, 12 * HEAD_DIM + kv.stop)
            attn.qkv_proj.weight[v_rows] = 0
        else:
            attn.v_proj.weight[kv] = 0
            if attn.v_proj.bias is not None:
                attn.v_proj.bias[kv] = 0
        heads = slice(KV_GROUP * GROUP * HEAD_DIM, (KV_GROUP + 1) * GROUP * HEAD_DIM)
        attn_out(attn).weight[:, heads].zero_()
        for writer in (attn_out(layers[DEAD_LAYER].self_attn), mlp_out(layers[DEAD_LAYER].mlp)):
            writer.weight.zero_()
            if writer.bias is not None:
                writer.bias.zero_()
        # Channel 7 is never written: embedding column and every residual writer's row are zero.
        model.get_input_embeddings().weight[:, CHANNEL].zero_()
        for layer in layers:
            for writer in (attn_out(layer.self_attn), mlp_out(layer.mlp)):
                writer.weight[CHANNEL].zero_()
                if writer.bias is not None:
                    writer.bias[CHANNEL] = 0
    return model


def _check(scores, model):
    c = text_config_of(model)
    assert scores.neurons.shape == (c.num_hidden_layers, c.intermediate_size)
    assert scores.heads.shape == (c.num_hidden_layers, c.num_attention_heads)
    assert scores.channels.shape == (c.hidden_size,)
    assert scores.layers.shape == (c.num_hidden_layers,)
    scores.check_compatible(c)
    assert scores.neurons[1].argmin() == NEURON and scores.neurons[1, NEURON] == 0
    dead_heads = {KV_GROUP * GROUP, KV_GROUP * GROUP + 1}
    assert set(scores.heads[0].topk(GROUP, largest=False).indices.tolist()) == dead_heads
    assert scores.layers.argmin() == DEAD_LAYER and scores.layers[DEAD_LAYER] == 0
    assert scores.channels.argmin() == CHANNEL  # (LayerNorm's mean and bias still move it: not exactly 0)


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_taylor_ranks_dead_units_lowest(model_type):
    model = _model_with_dead_units(model_type)
    spec = get_spec(model)
    spec.final_norm(model).weight.requires_grad_(False)  # a frozen parameter stays frozen afterwards
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    scores = estimate_taylor_importance(model, random_batches(2, pad_last=3))
    _check(scores, model)
    assert scores.metadata["importance"] == "taylor" and scores.metadata["num_samples"] == 4
    # Gradients are freed and requires_grad flags restored.
    assert all(p.grad is None for p in model.parameters())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_magnitude_ranks_dead_units_lowest(model_type):
    model = _model_with_dead_units(model_type)
    scores = estimate_magnitude_importance(model)
    _check(scores, model)
    assert scores.metadata["importance"] == "magnitude"


def test_taylor_matches_reference_on_one_batch():
    """Per-neuron score equals a plain autograd computation of sum |w * g| over the neuron's weights."""
    model = tiny_model("llama")
    batch = random_batches(1)[0]
    scores = estimate_taylor_importance(model, [batch])
    labels = batch["input_ids"]
    model.zero_grad()
    model(**batch, labels=labels).loss.backward()
    mlp = model.model.layers[3].mlp
    ref = sum((m.weight * m.weight.grad).abs().sum(1) for m in (mlp.gate_proj, mlp.up_proj))
    ref = ref + (mlp.down_proj.weight * mlp.down_proj.weight.grad).abs().sum(0)
    torch.testing.assert_close(scores.neurons[3], ref.detach(), rtol=1e-4, atol=1e-7)


def test_taylor_refuses_empty_batches():
    with pytest.raises(ValueError, match="empty"):
        estimate_taylor_importance(tiny_model("llama"), [])


def test_taylor_never_holds_all_gradients(monkeypatch):
    """At most one parameter's gradient exists at any time after accumulation."""
    model = tiny_model("llama")
    from hf_minitron.importance import taylor

    seen = []
    original = taylor._TaylorAccumulator.hook

    def spy(self, param):
        seen.append(sum(p.grad is not None for p in model.parameters()))
        original(self, param)

    monkeypatch.setattr(taylor._TaylorAccumulator, "hook", spy)
    estimate_taylor_importance(model, random_batches(1))
    assert seen and max(seen) <= 2


def test_magnitude_without_data_ranks_layers_by_weight_norm():
    """importance="magnitude" needs no batches, also for a depth-only target (0.1.0 raised a TypeError)."""
    from hf_minitron import PruningConfig, estimate_importance

    model = _model_with_dead_units("llama")
    scores = estimate_importance(model, None, PruningConfig(num_hidden_layers=3, importance="magnitude"))
    assert scores.layers.argmin() == DEAD_LAYER and scores.metadata["depth_metric"] == "weight_norm"
    with pytest.raises(ValueError, match="batches=None is invalid for importance='taylor'"):
        estimate_importance(model, None, PruningConfig(num_hidden_layers=3, importance="taylor"))


def test_taylor_reduces_on_the_device_of_each_parameter(monkeypatch):
    """Only per-unit vectors leave a parameter's device: no full |w x g| matrix is copied to the CPU."""
    model = tiny_model("llama")
    moved = []
    original = torch.Tensor.cpu

    def spy(self, *args, **kwargs):
        moved.append(self.dim())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", spy)
    estimate_taylor_importance(model, random_batches(1))
    assert moved and max(moved) <= 1
