"""Hybrid + MoE: Nemotron 3 Nano's MoE blocks in Nemotron-H and Granite 4's routed experts, with the MoE axes
(experts, expert neurons, shared-expert neurons) restricted to the layers that have them."""

from __future__ import annotations

import pytest
import torch
from test_hybrid import MOE, _layers, _logits
from test_pruning import reload_in_fresh_process
from tiny_models import random_batches, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron.config import PruningConfig
from hf_minitron.importance import estimate_importance
from hf_minitron.pruning import prune_model

# ------------------------------------------------- Nemotron-H MoE blocks (Nemotron 3 Nano)
DEAD_EXPERTS = (1, 6)  # one in each routing group of 4
DEAD_EXPERT_NEURONS = torch.arange(0, 32, 4)
DEAD_SHARED_NEURONS = torch.arange(0, 48, 4)


def kill_experts_and_neurons(model) -> list[int]:
    """Distinct score-correction biases for every expert (so a mis-sliced bias reroutes tokens), -10 for the dead
    experts (never in their group's top 2, never routed); zero up rows kill expert and shared-expert neurons."""
    layers = [i for i, _ in _layers(model, MOE)]
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, layer in _layers(model, MOE):
            moe = layer.mixer
            bias = torch.randn(8, generator=g) * 0.05
            bias[list(DEAD_EXPERTS)] = -10.0
            moe.gate.e_score_correction_bias.copy_(bias)
            moe.experts.up_proj[:, DEAD_EXPERT_NEURONS] = 0
            moe.shared_experts.up_proj.weight[DEAD_SHARED_NEURONS] = 0
    return layers


def test_nemotron_h_moe_dead_experts_and_neurons_rank_last_and_pruning_them_is_exact(tmp_path):
    """Nemotron 3 Nano's MoE block: experts kept per routing group with their router rows and correction bias
    (a buffer, still one after pruning), expert and shared-expert neurons; plain reload and generate."""
    model = tiny_model("nemotron_h")
    moe_layers = kill_experts_and_neurons(model)
    batch = random_batches(n=1, pad_last=3, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(
        num_local_experts=6,
        moe_intermediate_size=24,
        moe_shared_expert_intermediate_size=36,
        importance="activation",
    )
    scores = estimate_importance(model, random_batches(pad_last=4), target)
    experts = scores.experts[moe_layers]
    dead = torch.zeros(8, dtype=torch.bool)
    dead[list(DEAD_EXPERTS)] = True
    assert (experts[:, dead] == 0).all() and (experts[:, ~dead] > 0).all()
    assert (scores.expert_neurons[moe_layers][:, :, DEAD_EXPERT_NEURONS] == 0).all()
    assert (scores.shared_neurons[moe_layers][:, DEAD_SHARED_NEURONS] == 0).all()
    kept_bias = model.model.layers[moe_layers[0]].mixer.gate.e_score_correction_bias[~dead].clone()
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    c = model.config
    assert (
        c.n_routed_experts,
        c.n_group,
        c.moe_intermediate_size,
        c.moe_shared_expert_intermediate_size,
    ) == (
        6,
        2,
        24,
        36,
    )
    moe = model.model.layers[moe_layers[0]].mixer
    assert (moe.gate.num_experts, moe.experts.num_experts, moe.experts.intermediate_dim) == (6, 6, 24)
    assert "e_score_correction_bias" in dict(moe.gate.named_buffers())
    assert torch.equal(moe.gate.e_score_correction_bias, kept_bias)
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
    model.save_pretrained(tmp_path / "nemotron_h")
    torch.save({"batch": batch, "logits": before}, tmp_path / "nemotron_h" / "expected.pt")
    report = reload_in_fresh_process([tmp_path / "nemotron_h"])["nemotron_h"]
    assert report["err"] < 1e-5 and report["gen"] == 7


MOE_BAD = [
    (dict(num_local_experts=5), r"num_local_experts=5 is invalid: allowed a multiple of n_group=2"),
    (dict(num_local_experts=10), r"num_local_experts=10 is invalid: allowed 1\.\.8"),
    (
        dict(num_local_experts=1),
        r"num_local_experts=1 is invalid: allowed 2\.\.8 \(at least num_experts_per_tok=2",
    ),
    (dict(moe_intermediate_size=40), r"moe_intermediate_size=40 is invalid: allowed 1\.\.32"),
]


@pytest.mark.parametrize("request_,match", MOE_BAD, ids=[m.split(" ")[0] for _, m in MOE_BAD])
def test_nemotron_h_moe_bad_requests_name_the_field_and_leave_the_model_untouched(request_, match):
    model = tiny_model("nemotron_h")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        prune_model(model, PruningConfig(importance="activation", **request_))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_latent_moe_is_refused_before_surgery():
    """A latent MoE projection (moe_latent_size) is not described by the groups: refused naming the field."""
    model = tiny_model("nemotron_h", moe_latent_size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"moe_latent_size=16 is not supported yet .* allowed 0"):
        prune_model(model, PruningConfig(layers_to_drop=[3], importance="activation"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ------------------------------------------------- Granite 4 with routed experts
def kill_granite_expert(model, expert: int) -> None:
    """An expert that outputs zero and that the router never picks: hidden channel 0 carries a large constant
    (embedding column) that only its router row reads, with a large negative weight. Zero gate rows kill
    DEAD_EXPERT_NEURONS."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1.0
        for layer in model.model.layers:
            moe = layer.block_sparse_moe
            router = moe.router.weight
            router.copy_(torch.randn(router.shape, generator=g))  # O(1) logits: every live expert gets tokens
            router[:, 0] = 0
            router[expert] = 0
            router[expert, 0] = -1000.0
            moe.experts.down_proj[expert] = 0
            moe.experts.gate_up_proj[:, DEAD_EXPERT_NEURONS] = 0


def test_granite_dead_expert_and_neurons_rank_last_and_pruning_them_is_exact(tmp_path):
    """Granite 4's routed experts beside the shared MLP, in Mamba and attention layers alike."""
    model = tiny_model("granitemoehybrid")
    kill_granite_expert(model, expert=2)
    # no padding here: the pad token's embedding is zero but for channel 0, so its live router logits tie at
    # exactly 0 and top-k breaks that tie differently once there are fewer experts
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(num_local_experts=3, intermediate_size=24, importance="activation")
    scores = estimate_importance(model, random_batches(pad_last=4), target)
    assert (scores.experts[:, 2] == 0).all() and (scores.experts[:, [0, 1, 3]] > 0).all()
    live = scores.expert_neurons[:, [0, 1, 3]]
    assert (live[..., DEAD_EXPERT_NEURONS] == 0).all() and (live.sum(-1) > 0).all()
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert (model.config.num_local_experts, model.config.intermediate_size, model.num_experts) == (3, 24, 3)
    for layer in model.model.layers:
        moe = layer.block_sparse_moe
        assert (moe.router.num_experts, moe.experts.num_experts, moe.experts.intermediate_dim) == (3, 3, 24)
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    model.save_pretrained(tmp_path / "granitemoehybrid")
    torch.save({"batch": batch, "logits": before}, tmp_path / "granitemoehybrid" / "expected.pt")
    report = reload_in_fresh_process([tmp_path / "granitemoehybrid"])["granitemoehybrid"]
    assert report["err"] < 1e-5 and report["gen"] == 7


GRANITE_BAD = [
    (
        dict(num_local_experts=1),
        r"num_local_experts=1 is invalid: allowed 2\.\.4 \(at least num_experts_per_tok=2",
    ),
    (dict(num_local_experts=5), r"num_local_experts=5 is invalid: allowed 1\.\.4"),
    (dict(intermediate_size=40), r"intermediate_size=40 is invalid: allowed 1\.\.32"),
]


@pytest.mark.parametrize("request_,match", GRANITE_BAD, ids=[m.split(" ")[0] for _, m in GRANITE_BAD])
def test_granite_bad_expert_requests_name_the_field_and_leave_the_model_untouched(request_, match):
    model = tiny_model("granitemoehybrid")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        prune_model(model, PruningConfig(importance="activation", **request_))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
