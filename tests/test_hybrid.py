"""Hybrid families (layers of different kinds): Mamba-2 heads, per-kind groups, pattern-consistent depth."""

from __future__ import annotations

import pytest
import torch
from test_pruning import reload_in_fresh_process
from tiny_models import HYBRID_PATTERN, random_batches, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron.architectures import get_spec
from hf_minitron.config import PruningConfig
from hf_minitron.importance import estimate_importance
from hf_minitron.pruning import prune_model

MAMBA, ATTENTION, MLP, MOE = "linear_attention", "full_attention", "mlp", "moe"
DEAD_MAMBA_HEADS = (1, 8)  # one head in each of the 2 groups of 6 heads
DEAD_NEURONS = torch.arange(0, 128, 4)
DEAD_KV_GROUP = 1  # query heads 2, 3 (with KV group 1 of 4)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _layers(model, kind):
    """The layers of one kind (Falcon-H1's layers have every kind: no `block_type`)."""
    layers = enumerate(get_spec(model).layers(model))
    return [(i, layer) for i, layer in layers if getattr(layer, "block_type", kind) == kind]


def kill_mamba_heads(model, heads=DEAD_MAMBA_HEADS) -> None:
    """Zero the x channels of the heads (in_proj rows after z, conv1d weight and bias): their scan output is 0."""
    for _, layer in _layers(model, MAMBA):
        mixer = getattr(layer, "mixer", None) or layer.mamba
        hd, inner = mixer.head_dim, mixer.num_heads * mixer.head_dim
        x_rows = torch.cat([torch.arange(h * hd, (h + 1) * hd) for h in heads])
        with torch.no_grad():
            mixer.in_proj.weight[inner + x_rows] = 0
            mixer.conv1d.weight[x_rows] = 0
            mixer.conv1d.bias[x_rows] = 0


def kill_mlp_neurons_and_kv_group(model) -> None:
    c = model.config
    hd, per = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    kv = torch.arange(DEAD_KV_GROUP * hd, (DEAD_KV_GROUP + 1) * hd)
    q = torch.arange(DEAD_KV_GROUP * per * hd, (DEAD_KV_GROUP + 1) * per * hd)
    with torch.no_grad():
        for _, layer in _layers(model, MLP):
            layer.mixer.up_proj.weight[DEAD_NEURONS] = 0
        for _, layer in _layers(model, ATTENTION):
            for proj, rows in ((layer.mixer.q_proj, q), (layer.mixer.k_proj, kv), (layer.mixer.v_proj, kv)):
                proj.weight[rows] = 0


@pytest.mark.parametrize("arch", ["nemotron_h"])
def test_dead_mamba_heads_neurons_and_kv_group_rank_last_and_pruning_them_is_exact(arch, tmp_path):
    model = tiny_model(arch)
    kill_mamba_heads(model)
    kill_mlp_neurons_and_kv_group(model)
    batch = random_batches(n=1, pad_last=3, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(  # rescale_norms: the gated norm's statistic spans a group of heads
        mamba_num_heads=10,
        intermediate_size=96,
        num_key_value_heads=3,
        importance="activation",
        rescale_norms=True,
    )
    scores = estimate_importance(model, random_batches(pad_last=4), target)
    mamba = [i for i, _ in _layers(model, MAMBA)]
    dead = torch.zeros(12, dtype=torch.bool)
    dead[list(DEAD_MAMBA_HEADS)] = True
    assert (scores.mamba_heads[mamba][:, dead] == 0).all() and (scores.mamba_heads[mamba][:, ~dead] > 0).all()
    others = [i for i in range(len(HYBRID_PATTERN)) if i not in mamba]
    assert not scores.mamba_heads[others].any()  # layers of other kinds have no Mamba heads
    mlp = [i for i, _ in _layers(model, MLP)]
    assert (scores.neurons[mlp][:, DEAD_NEURONS] == 0).all()
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    c = model.config
    assert (c.mamba_num_heads, c.n_groups, c.intermediate_size, c.num_key_value_heads) == (10, 2, 96, 3)
    for _, layer in _layers(model, MAMBA):
        m = layer.mixer
        assert (m.num_heads, m.intermediate_size, m.conv_dim, m.norm.group_size) == (10, 80, 80 + 64, 40)
        assert m.conv1d.groups == m.conv1d.in_channels == 144
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    # a plain reload in a fresh process (no hf_minitron) gives the same logits and generates with the hybrid cache
    model.save_pretrained(tmp_path / arch)
    torch.save({"batch": batch, "logits": before}, tmp_path / arch / "expected.pt")
    report = reload_in_fresh_process([tmp_path / arch])[arch]
    assert report["err"] < 1e-5 and report["gen"] == 7


@pytest.mark.parametrize("arch", ["nemotron_h"])
def test_dead_mamba_head_ranks_last_in_its_group_under_taylor_and_magnitude(arch):
    model = tiny_model(arch)
    kill_mamba_heads(model)
    mamba = [i for i, _ in _layers(model, MAMBA)]
    for importance in ("taylor", "magnitude"):
        target = PruningConfig(mamba_num_heads=10, importance=importance)
        scores = estimate_importance(model, random_batches(), target).mamba_heads[mamba]
        per_group = scores.reshape(len(mamba), 2, 6)
        assert (per_group.argmin(-1) == torch.tensor([1, 2])).all(), importance


@pytest.mark.parametrize("arch", ["nemotron_h"])
@pytest.mark.parametrize("dead", [0, 1, 2, 4], ids=[MAMBA, ATTENTION, MLP, MOE])
def test_dead_layer_of_each_kind_ranks_last_and_dropping_it_keeps_the_pattern(arch, dead):
    model = tiny_model(arch)
    mixer = get_spec(model).layers(model)[dead].mixer
    writers = {
        MAMBA: [mixer.out_proj.weight] if hasattr(mixer, "out_proj") else [],
        ATTENTION: [mixer.o_proj.weight] if hasattr(mixer, "o_proj") else [],
        MLP: [mixer.down_proj.weight] if hasattr(mixer, "down_proj") else [],
        MOE: [mixer.experts.down_proj, mixer.shared_experts.down_proj.weight]
        if hasattr(mixer, "experts")
        else [],
    }[HYBRID_PATTERN[dead]]
    with torch.no_grad():
        for w in writers:
            w.zero_()
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(num_hidden_layers=5, importance="activation")
    scores = estimate_importance(model, random_batches(), target)
    assert scores.layers.argmin() == dead
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    expected = HYBRID_PATTERN[:dead] + HYBRID_PATTERN[dead + 1 :]
    assert model.config.layers_block_type == expected and model.config.num_hidden_layers == 5
    layers = get_spec(model).layers(model)
    assert [layer.block_type for layer in layers] == expected
    assert [layer.layer_idx for layer in layers] == list(range(5))
    assert all(
        layer.mixer.layer_idx == i for i, layer in enumerate(layers) if hasattr(layer.mixer, "layer_idx")
    )
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
    out = model.generate(batch["input_ids"][:1, :5], max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == 9


@pytest.mark.parametrize("arch", ["nemotron_h"])
def test_every_axis_together_builds_the_shape_from_config_and_generates(arch):
    model = tiny_model(arch)
    target = PruningConfig(
        hidden_size=48,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        mamba_num_heads=6,
        layers_to_drop=[3],
    )
    prune_model(model, target, estimate_importance(model, random_batches(), target))
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert model.config.layers_block_type == HYBRID_PATTERN[:3] + HYBRID_PATTERN[4:]
    assert model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, do_sample=False).shape[1] == 6


BAD = [
    (dict(mamba_num_heads=7), r"mamba_num_heads=7 is invalid: allowed a multiple of n_groups=2"),
    (dict(mamba_num_heads=14), r"mamba_num_heads=14 is invalid: allowed 1\.\.12"),
    (dict(layers_to_drop=[6]), r"layers_to_drop=\[6\] is invalid"),
]


@pytest.mark.parametrize("arch", ["nemotron_h"])
@pytest.mark.parametrize("request_,match", BAD, ids=[m.split(" ")[0] for _, m in BAD])
def test_bad_requests_name_the_field_and_leave_the_model_untouched(arch, request_, match):
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        prune_model(model, PruningConfig(importance="activation", **request_))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", ["nemotron_h", "falcon_h1"])
def test_one_head_per_group_prunes_the_groups_with_the_heads(arch):
    """n_groups == heads ("MHA stays MHA"): a dead head goes with its group's B/C rows and conv channels, and the
    gated norm's gain keeps its per-group scale (the group width is unchanged, unlike pruning heads in a group)."""
    keys = {"nemotron_h": ("mamba_num_heads", "n_groups"), "falcon_h1": ("mamba_n_heads", "mamba_n_groups")}[
        arch
    ]
    extra = {"falcon_h1": dict(mamba_d_ssm=32)}.get(arch, {})
    model = tiny_model(arch, **{keys[0]: 4, keys[1]: 4}, **extra)
    kill_mamba_heads(model, heads=(1,))
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(importance="activation", rescale_norms=True, **{keys[0]: 3})
    scores = estimate_importance(model, random_batches(), target)
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert (getattr(model.config, keys[0]), getattr(model.config, keys[1])) == (3, 3)
    for _, layer in _layers(model, MAMBA):
        mixer = getattr(layer, "mixer", None) or layer.mamba
        assert (mixer.n_groups, mixer.conv_dim) == (3, 3 * 8 + 2 * 3 * 16)
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, do_sample=False).shape[1] == 6


DISTILL = {  # arch -> (Mamba heads request, layers_to_drop, kept layers)
    "nemotron_h": (dict(mamba_num_heads=10), [4], [0, 1, 2, 3, 5]),
    "falcon_h1": (dict(mamba_n_heads=10), [2], [0, 1, 3]),
}


@pytest.mark.parametrize("arch", sorted(DISTILL))
def test_pruned_hybrid_student_distills_with_the_trainer(arch, tmp_path):
    """Width and depth pruned student, hidden-state loss on the kept layers and the kept channels."""
    from distill_worker import tiny_args, token_dataset

    from hf_minitron import DistillationTrainer

    heads, drop, kept = DISTILL[arch]
    teacher = tiny_model(arch)
    student = tiny_model(arch)
    target = PruningConfig(hidden_size=48, layers_to_drop=drop, importance="activation", **heads)
    prune_model(student, target, estimate_importance(student, random_batches(), target))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    args = tiny_args(tmp_path, hidden_state_weight=1.0, logging_steps=1)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    assert trainer.layer_pairs and trainer.layer_pairs[0][1] == kept[trainer.layer_pairs[0][0] + 1] - 1
    trainer.train()
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert logged and all(torch.isfinite(torch.tensor(row["loss"])) for row in logged)
    assert {"distill_loss", "hidden_state_loss"} <= logged[0].keys()
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


# ------------------------------------------------- Bamba, Granite 4: Mamba width tied to the hidden size
BAMBA_PATTERN = [MAMBA, ATTENTION, MAMBA, MAMBA, ATTENTION]  # bamba: attn_layer_indices [1, 4]
TIED = {
    "bamba": ("feed_forward", "down_proj", "intermediate_size"),
    "granitemoehybrid": ("shared_mlp", "output_linear", "shared_intermediate_size"),
}


@pytest.mark.parametrize("arch", sorted(TIED))
@pytest.mark.parametrize("dead", [0, 1], ids=[MAMBA, ATTENTION])
def test_tied_dead_layer_ranks_last_and_dropping_it_keeps_the_pattern(arch, dead):
    model = tiny_model(arch)
    layer = model.model.layers[dead]
    mlp, writer, _ = TIED[arch]
    with torch.no_grad():
        (layer.mamba.out_proj if dead == 0 else layer.self_attn.o_proj).weight.zero_()
        getattr(getattr(layer, mlp), writer).weight.zero_()
        if getattr(layer, "block_sparse_moe", None) is not None:  # Granite 4's routed experts
            layer.block_sparse_moe.experts.down_proj.zero_()
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(num_hidden_layers=4, importance="activation")
    scores = estimate_importance(model, random_batches(), target)
    assert scores.layers.argmin() == dead
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    expected = BAMBA_PATTERN[:dead] + BAMBA_PATTERN[dead + 1 :]
    assert model.config.layers_block_type == expected
    if arch == "bamba":
        assert model.config.attn_layer_indices == [i for i, k in enumerate(expected) if k == ATTENTION]
    mixers = [
        layer.mamba if k == MAMBA else layer.self_attn for layer, k in zip(model.model.layers, expected)
    ]
    assert [m.layer_idx for m in mixers] == list(range(4))
    assert model.generate(batch["input_ids"][:1, :5], max_new_tokens=3, do_sample=False).shape[1] == 8


@pytest.mark.parametrize("arch", sorted(TIED))
def test_tied_mamba_heads_go_with_the_hidden_size(arch, tmp_path):
    """The config ties mamba_n_heads * mamba_d_head to mamba_expand * hidden_size: alone it is refused before
    surgery naming both; with the hidden size in proportion a dead head ranks last and the shape reloads."""
    model = tiny_model(arch)
    kill_mamba_heads(model, heads=(1, 9))
    mlp_key = TIED[arch][2]
    target = PruningConfig(hidden_size=48, mamba_n_heads=12, importance="activation", **{mlp_key: 96})
    scores = estimate_importance(model, random_batches(), target)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for bad, match in (
        (
            dict(mamba_n_heads=12),
            r"mamba_n_heads=12 with hidden_size=64 is invalid .* allowed mamba_n_heads=16",
        ),
        (
            dict(hidden_size=48),
            r"mamba_n_heads=16 with hidden_size=48 is invalid .* allowed mamba_n_heads=12",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            prune_model(model, PruningConfig(importance="activation", **bad), scores)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    mamba = [i for i, k in enumerate(BAMBA_PATTERN) if k == MAMBA]
    assert (scores.mamba_heads[mamba][:, [1, 9]] == 0).all() and (scores.mamba_heads[mamba].sum(1) > 0).all()
    prune_model(model, target, scores)
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    batch = random_batches(n=1, seed=1)[0]
    assert getattr(model.config, mlp_key) == 96 and model.config.mamba_n_heads == 12
    model.save_pretrained(tmp_path / arch)
    torch.save({"batch": batch, "logits": _logits(model, batch)}, tmp_path / arch / "expected.pt")
    report = reload_in_fresh_process([tmp_path / arch])[arch]
    assert report["err"] < 1e-5 and report["gen"] == 7


def test_depth_by_scores_keeps_an_attention_layer():
    from hf_minitron.importance import ImportanceScores

    model = tiny_model("nemotron_h")
    scores = ImportanceScores(layers=torch.tensor([5.0, 0.0, 5.0, 5.0, 5.0, 0.0]), metadata={})
    with pytest.raises(
        ValueError, match=r"num_hidden_layers=4 is invalid with these scores: they drop every full"
    ):
        prune_model(model, PruningConfig(num_hidden_layers=4, importance="activation"), scores)
    prune_model(
        model, PruningConfig(layers_to_drop=[1, 5], importance="activation")
    )  # named explicitly: allowed
    assert ATTENTION not in model.config.layers_block_type


@pytest.mark.parametrize("experts", [4, 0], ids=["routed_experts", "dense"])
def test_granite_dead_shared_mlp_neurons_rank_last_and_pruning_them_is_exact(experts):
    """The shared MLP's fused [gate | up] `input_linear`: zero up rows kill the neurons; cut segment by segment.
    Dense Granite 4 (num_local_experts=0) has no expert tensors: the optional expert slices are skipped."""
    model = tiny_model("granitemoehybrid", num_local_experts=experts)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.shared_mlp.input_linear.weight[128 + DEAD_NEURONS] = 0
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(shared_intermediate_size=96, importance="activation")
    scores = estimate_importance(model, random_batches(), target)
    assert (scores.neurons[:, DEAD_NEURONS] == 0).all() and (scores.neurons.sum(1) > 0).all()
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert all(layer.shared_mlp.hidden_size == 96 for layer in model.model.layers)
    assert model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, do_sample=False).shape[1] == 6
