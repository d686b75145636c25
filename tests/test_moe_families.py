"""What one MoE family does differently (GLM-4-MoE, ERNIE-4.5, Granite's shared MLP), beyond the matrix in test_moe.py."""

from __future__ import annotations

import pytest
import torch
from test_moe import _logits, _manual_scores, kill_neurons
from tiny_models import random_batches, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron.config import PruningConfig
from hf_minitron.counting import count_parameters
from hf_minitron.importance import estimate_importance
from hf_minitron.pruning import prune_model


@pytest.mark.parametrize("dropped,dense_prefix", [([0], 0), ([2], 1)])
def test_glm4_moe_depth_pruning_recounts_the_dense_prefix(tmp_path, dropped, dense_prefix):
    """GLM-4-MoE's first first_k_dense_replace layers are dense: dropping layers recounts them, and the config
    alone rebuilds each kept layer's kind (a reload gives the same logits)."""
    model = tiny_model("glm4_moe")  # layer 0 dense, layers 1-3 MoE
    batch = random_batches(n=1)[0]
    kinds = [hasattr(layer.mlp, "experts") for layer in model.model.layers]
    prune_model(model, PruningConfig(layers_to_drop=dropped, importance="activation"))
    assert model.config.first_k_dense_replace == dense_prefix
    assert [hasattr(layer.mlp, "experts") for layer in model.model.layers] == [
        k for i, k in enumerate(kinds) if i not in dropped
    ]
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch), atol=1e-5, rtol=1e-5)


def test_glm4_moe_with_two_shared_experts_prunes_them_in_pairs():
    """n_shared_experts=2: the shared MLP is twice an expert's width and loses two neurons per expert neuron."""
    model = tiny_model("glm4_moe", n_shared_experts=2)
    kill_neurons(model)
    batch = random_batches(n=1, pad_last=3, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(importance="activation", moe_intermediate_size=24)
    prune_model(model, target, estimate_importance(model, [*random_batches(pad_last=4), batch], target))
    assert model.model.layers[1].mlp.shared_experts.up_proj.weight.shape == (48, 64)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config)


def test_glm4_moe_group_limited_routing_is_refused():
    """Experts routed within groups (n_group > 1) are refused before any tensor changes, naming the field."""
    model = tiny_model("glm4_moe", n_group=2, topk_group=1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="n_group=2 is not supported yet for glm4_moe: allowed 1"):
        prune_model(model, PruningConfig(num_local_experts=2, importance="activation"), _manual_scores(model))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert model.config.n_routed_experts == 4


ERNIE_DEPTH = [
    (dict(), [0], (0, 2, 1)),  # the dense first layer dropped: every kept layer is MoE
    (dict(), [2], (1, 2, 1)),
    (dict(moe_layer_start_index=0, moe_layer_interval=2), [2], (1, 2, 1)),  # MoE at 1, 3 -> kept 1, 2
    (dict(moe_layer_start_index=0, moe_layer_interval=2), [0, 1], (1, 1, 2)),  # MoE at 3 -> kept 1
]


@pytest.mark.parametrize("override,dropped,pattern", ERNIE_DEPTH)
def test_ernie_moe_depth_pruning_rewrites_where_the_moe_layers_are(tmp_path, override, dropped, pattern):
    """ERNIE-4.5 places MoE layers by start, end and interval: after dropping layers the three describe the kept
    ones, and the config alone rebuilds each kept layer's kind (a reload gives the same logits)."""
    model = tiny_model("ernie4_5_moe", **override)
    kinds = [hasattr(layer.mlp, "experts") for layer in model.model.layers]
    prune_model(model, PruningConfig(layers_to_drop=dropped, importance="activation"))
    c = model.config
    assert (c.moe_layer_start_index, c.moe_layer_end_index, c.moe_layer_interval) == pattern
    assert [hasattr(layer.mlp, "experts") for layer in model.model.layers] == [
        k for i, k in enumerate(kinds) if i not in dropped
    ]
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert [hasattr(layer.mlp, "experts") for layer in reloaded.model.layers] == [
        k for i, k in enumerate(kinds) if i not in dropped
    ]
    batch = random_batches(n=1)[0]
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch), atol=1e-5, rtol=1e-5)


def test_ernie_moe_layers_that_no_interval_describes_are_refused():
    model = tiny_model("ernie4_5_moe", moe_layer_start_index=0, moe_layer_interval=2)  # MoE at 1, 3
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"layers_to_drop leaves MoE layers at \[0, 2\].*allowed"):
        prune_model(model, PruningConfig(layers_to_drop=[0], importance="activation"))
    assert model.config.num_hidden_layers == 4
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_granite_shared_mlp_width_prunes_like_a_dense_mlp():
    """Granite-MoE's shared MLP (fused [gate | up] input_linear): dead neurons rank last and cutting them keeps
    the logits; the expert width is untouched."""
    model = tiny_model("granitemoeshared")  # shared_intermediate_size 48
    with torch.no_grad():
        for layer in model.model.layers:
            layer.shared_mlp.input_linear.weight[48:64] = 0  # up half of neurons 0-15
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    config = PruningConfig(shared_intermediate_size=32, importance="activation")
    scores = estimate_importance(model, random_batches(), config)
    assert set(scores.tensors) == {"shared_neurons"}
    assert (scores.shared_neurons[:, :16] == 0).all() and (scores.shared_neurons[:, 16:] > 0).all()
    prune_model(model, config, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    shared = model.model.layers[0].shared_mlp
    assert shared.input_linear.weight.shape == (64, 64) and shared.output_linear.weight.shape == (64, 32)
    assert model.model.layers[0].block_sparse_moe.experts.down_proj.shape == (4, 64, 32)
