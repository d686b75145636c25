"""Falcon-H1: attention, a Mamba-2 mixer and an MLP in every layer; mamba_d_ssm and the mup_vector buffer."""

from __future__ import annotations

import pytest
import torch
from test_hybrid import DEAD_KV_GROUP, DEAD_MAMBA_HEADS, DEAD_NEURONS, _logits, kill_mamba_heads
from test_pruning import reload_in_fresh_process
from tiny_models import random_batches, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron.config import PruningConfig
from hf_minitron.importance import estimate_importance
from hf_minitron.pruning import prune_model


def kill_falcon_neurons_and_kv_group(model) -> None:
    c = model.config
    hd, per = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    kv = torch.arange(DEAD_KV_GROUP * hd, (DEAD_KV_GROUP + 1) * hd)
    q = torch.arange(DEAD_KV_GROUP * per * hd, (DEAD_KV_GROUP + 1) * per * hd)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.feed_forward.up_proj.weight[DEAD_NEURONS] = 0
            attn = layer.self_attn
            for proj, rows in ((attn.q_proj, q), (attn.k_proj, kv), (attn.v_proj, kv)):
                proj.weight[rows] = 0


def test_falcon_dead_mamba_heads_neurons_and_kv_group_rank_last_and_pruning_them_is_exact(tmp_path):
    """mamba_d_ssm follows the heads and the mup_vector buffer (every muP multiplier distinct) matches what a
    fresh model builds from the pruned config."""
    model = tiny_model("falcon_h1")
    kill_mamba_heads(model)
    kill_falcon_neurons_and_kv_group(model)
    batch = random_batches(n=1, pad_last=3, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(
        mamba_n_heads=10,
        intermediate_size=96,
        num_key_value_heads=3,
        importance="activation",
        rescale_norms=True,
    )
    scores = estimate_importance(model, random_batches(pad_last=4), target)
    dead = torch.zeros(12, dtype=torch.bool)
    dead[list(DEAD_MAMBA_HEADS)] = True
    assert (scores.mamba_heads[:, dead] == 0).all() and (scores.mamba_heads[:, ~dead] > 0).all()
    assert (scores.neurons[:, DEAD_NEURONS] == 0).all()
    assert (scores.heads[:, 2:4] == 0).all() and (scores.heads[:, [0, 1, 4, 5, 6, 7]] > 0).all()
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    c = model.config
    assert (c.mamba_n_heads, c.mamba_n_groups, c.mamba_d_ssm) == (10, 2, 80)
    assert (c.intermediate_size, c.num_key_value_heads) == (96, 3)
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
    for layer, reference in zip(model.model.layers, fresh.model.layers):
        m = layer.mamba
        assert (m.num_heads, m.intermediate_size, m.conv_dim) == (10, 80, 80 + 64)
        assert m.conv1d.groups == m.conv1d.in_channels == 144
        torch.testing.assert_close(m.mup_vector, reference.mamba.mup_vector, atol=0, rtol=0)
        assert m.mup_vector.shape == (1, 1, 2 * 80 + 64 + 10)
    model.save_pretrained(tmp_path / "falcon_h1")
    torch.save({"batch": batch, "logits": before}, tmp_path / "falcon_h1" / "expected.pt")
    report = reload_in_fresh_process([tmp_path / "falcon_h1"])["falcon_h1"]
    assert report["err"] < 1e-5 and report["gen"] == 7


def test_falcon_without_gated_norm_prunes_heads_exactly():
    """mamba_rms_norm=False: the mixer's norm is an Identity (no weight to cut), the gate multiplies directly."""
    model = tiny_model("falcon_h1", mamba_rms_norm=False)
    kill_mamba_heads(model)
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(mamba_n_heads=10, importance="activation")
    prune_model(model, target, estimate_importance(model, random_batches(), target))
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert isinstance(model.model.layers[0].mamba.norm, torch.nn.Identity)


def test_falcon_dead_layer_ranks_last_and_dropping_it_is_exact():
    model = tiny_model("falcon_h1")
    dead = 2
    layer = model.model.layers[dead]
    with torch.no_grad():
        for writer in (layer.mamba.out_proj, layer.self_attn.o_proj, layer.feed_forward.down_proj):
            writer.weight.zero_()
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(num_hidden_layers=3, importance="activation")
    scores = estimate_importance(model, random_batches(), target)
    assert scores.layers.argmin() == dead
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert model.config.num_hidden_layers == 3 and model.config.layers_block_type == ["hybrid"] * 3
    layers = model.model.layers
    assert [(x.mamba.layer_idx, x.self_attn.layer_idx) for x in layers] == [(0, 0), (1, 1), (2, 2)]
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
    out = model.generate(batch["input_ids"][:1, :5], max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == 9


@pytest.mark.parametrize("d_ssm", [96, None], ids=["mamba_d_ssm", "expand_x_hidden"])
def test_falcon_every_axis_together_builds_the_shape_from_config_and_generates(d_ssm):
    """With mamba_d_ssm unset the Mamba width is mamba_expand * hidden_size: pruning the hidden size must write
    mamba_d_ssm explicitly, or the config would describe another width than the weights."""
    overrides = {} if d_ssm else dict(mamba_d_ssm=None, mamba_n_heads=16)
    model = tiny_model("falcon_h1", **overrides)
    heads = model.config.mamba_n_heads
    target = PruningConfig(
        hidden_size=48,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        mamba_n_heads=heads - 4,
        layers_to_drop=[3],
    )
    prune_model(model, target, estimate_importance(model, random_batches(), target))
    assert model.config.mamba_d_ssm == (heads - 4) * 8
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, do_sample=False).shape[1] == 6


FALCON_BAD = [
    (dict(mamba_n_heads=7), r"mamba_n_heads=7 is invalid: allowed a multiple of mamba_n_groups=2"),
    (dict(mamba_n_heads=14), r"mamba_n_heads=14 is invalid: allowed 1\.\.12"),
    (dict(mamba_num_heads=10), r"mamba_num_heads=10 is invalid: allowed None"),
    (dict(layers_to_drop=[4]), r"layers_to_drop=\[4\] is invalid: allowed indices in 0\.\.3"),
]


@pytest.mark.parametrize("request_,match", FALCON_BAD, ids=[m.split(" ")[0] for _, m in FALCON_BAD])
def test_falcon_bad_requests_name_the_field_and_leave_the_model_untouched(request_, match):
    model = tiny_model("falcon_h1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        prune_model(model, PruningConfig(importance="activation", **request_))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_falcon_parameter_budget_prunes_to_a_shape_counted_exactly():
    """Falcon-H1's layers are all alike (no pattern), so the budget's cost fit applies: the pruned model has the
    parameters that a fresh model of its config has, near the budget."""
    model = tiny_model("falcon_h1")
    target = PruningConfig(target_params=150_000, importance="activation")
    prune_model(model, target, estimate_importance(model, random_batches(), target))
    n = sum(p.numel() for p in model.parameters())
    assert n == sum(p.numel() for p in AutoModelForCausalLM.from_config(model.config).parameters())
    assert abs(n - 150_000) < 0.1 * 150_000 and model.config.hidden_size < 64
