"""Gated DeltaNet hybrids (Qwen3-Next, Qwen 3.5, OLMo Hybrid): linear-attention heads, gated query rows, depth."""

from __future__ import annotations

import pytest
import torch
from test_moe import DEAD_EXPERT, _sparse, kill_expert, kill_neurons
from test_pruning import reload_in_fresh_process
from tiny_models import DELTANET_PATTERN, random_batches, tiny_model
from transformers import AutoModelForCausalLM

from hf_minitron.architectures import get_spec
from hf_minitron.config import PruningConfig
from hf_minitron.importance import estimate_importance
from hf_minitron.pruning import prune_model

LINEAR, FULL = "linear_attention", "full_attention"
FAMILIES = ["qwen3_next", "qwen3_5_text", "olmo_hybrid", "qwen3_5_moe_text"]
DEAD_VALUE_HEADS = (1, 4)  # one value head under each of the 2 key heads (3 value heads each)
DEAD_KV_GROUP = 1  # full attention: query heads 2, 3 (KV group 1 of 4)


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _layers(model, kind):
    kinds = get_spec(model).layer_kinds(model.config)
    return [(i, layer) for i, layer in enumerate(get_spec(model).layers(model)) if kinds[i] == kind]


def _shapes(model) -> dict:
    return {k: v.shape for k, v in model.state_dict().items()}


def _v_rows(mixer, heads) -> tuple[torch.nn.Linear, torch.Tensor]:
    """The input projection and its rows that carry the v channels of `heads`, read off the modeling code's
    layout: Qwen3-Next's in_proj_qkvz is viewed per key head as [q | k | v of its heads | z of its heads]."""
    dk, dv = mixer.head_k_dim, mixer.head_v_dim
    r = mixer.num_v_heads // mixer.num_k_heads
    if hasattr(mixer, "in_proj_qkvz"):
        block = 2 * dk + 2 * r * dv
        starts = [h // r * block + 2 * dk + h % r * dv for h in heads]
        proj = mixer.in_proj_qkvz
    elif hasattr(mixer, "in_proj_qkv"):
        starts, proj = [mixer.key_dim * 2 + h * dv for h in heads], mixer.in_proj_qkv
    else:
        starts, proj = [h * dv for h in heads], mixer.v_proj
    return proj, torch.cat([torch.arange(s, s + dv) for s in starts])


def kill_value_heads(model, heads=DEAD_VALUE_HEADS) -> None:
    """Zero the v channels of `heads` (input projection rows and depthwise conv channels): their delta-rule state
    stays 0, so their output before the output projection is exactly 0."""
    with torch.no_grad():
        for _, layer in _layers(model, LINEAR):
            mixer = layer.linear_attn
            proj, rows = _v_rows(mixer, heads)
            proj.weight[rows] = 0
            dv = mixer.head_v_dim
            conv = torch.cat(
                [torch.arange(2 * mixer.key_dim + h * dv, 2 * mixer.key_dim + (h + 1) * dv) for h in heads]
            )
            mixer.conv1d.weight[conv] = 0


def kill_kv_group(model, group=DEAD_KV_GROUP) -> None:
    """Zero q, k and v of one KV group in the full-attention layers: its query heads output 0 whatever their gate
    (Qwen's q_proj rows are [q | gate] per head), and add nothing to a q/k norm over all heads (OLMo)."""
    c = model.config.get_text_config()
    hd, per = c.head_dim, c.num_attention_heads // c.num_key_value_heads
    rows = torch.arange(group * hd, (group + 1) * hd)
    with torch.no_grad():
        for _, layer in _layers(model, FULL):
            attn = layer.self_attn
            step = attn.q_proj.out_features // c.num_attention_heads  # 2 * head_dim when gated
            q = torch.cat(
                [torch.arange(h * step, h * step + hd) for h in range(group * per, (group + 1) * per)]
            )
            attn.q_proj.weight[q] = 0
            attn.k_proj.weight[rows] = 0
            attn.v_proj.weight[rows] = 0


def kill_layer(model, index: int) -> None:
    """Make one layer the identity: its mixer's and its MLP's (experts', shared expert's) writers are zero."""
    layer = get_spec(model).layers(model)[index]
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if (
                name.split(".")[-2:-1] in (["out_proj"], ["o_proj"])
                or name.endswith("down_proj")
                or (name.endswith("down_proj.weight") and "mlp" in name)
            ):
                param.zero_()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """Every family with dead value heads, a dead full-attention KV group and (MoE) a dead expert and dead expert
    neurons, pruned exactly to them and saved."""
    root = tmp_path_factory.mktemp("deltanet")
    batch = random_batches(n=1, pad_last=3, seed=1)[0]
    out = {}
    for arch in FAMILIES:
        model = tiny_model(arch)
        kill_value_heads(model)
        kill_kv_group(model)
        sizes = dict(linear_num_value_heads=4, num_key_value_heads=3)
        if "experts" in {g.name for g in get_spec(model).groups}:
            kill_expert(model)
            kill_neurons(model)
            sizes.update(num_experts=3, moe_intermediate_size=24)
        before = _logits(model, batch)
        target = PruningConfig(importance="activation", **sizes)
        # the checked batch among the calibration ones: every expert it routes to has been observed
        scores = estimate_importance(model, [*random_batches(pad_last=4), batch], target)
        prune_model(model, target, scores)
        after = _logits(model, batch)
        model.save_pretrained(root / arch)
        torch.save({"batch": batch, "logits": after}, root / arch / "expected.pt")
        out[arch] = (model, scores, before, after, root / arch, batch["attention_mask"].bool())
    return out


@pytest.mark.parametrize("arch", FAMILIES)
def test_dead_value_heads_and_kv_group_rank_last_and_pruning_them_is_exact(pruned, arch):
    model, scores, before, after, _, real = pruned[arch]
    kinds = get_spec(model).layer_kinds(tiny_model(arch).config)
    linear = [i for i, k in enumerate(kinds) if k == LINEAR]
    full = [i for i, k in enumerate(kinds) if k == FULL]
    dead = torch.zeros(6, dtype=torch.bool)
    dead[list(DEAD_VALUE_HEADS)] = True
    assert (scores.linear_heads[linear][:, dead] == 0).all() and (
        scores.linear_heads[linear][:, ~dead] > 0
    ).all()
    assert not scores.linear_heads[full].any()  # full-attention layers have no DeltaNet heads
    assert (scores.heads[full][:, 2:4] == 0).all() and (scores.heads[full][:, [0, 1, 4, 5, 6, 7]] > 0).all()
    # padding positions excluded: a MoE router sees exact ties there (the DeltaNet mixer zeroes padded inputs), and
    # which of the tied experts top-k picks depends on the expert indices
    torch.testing.assert_close(after[real], before[real], atol=1e-5, rtol=1e-5)
    c = model.config.get_text_config()
    shape = (c.linear_num_value_heads, c.linear_num_key_heads, c.num_attention_heads, c.num_key_value_heads)
    assert shape == (4, 2, 6, 3)
    for _, layer in _layers(model, LINEAR):
        m = layer.linear_attn
        assert (m.num_v_heads, m.num_k_heads, m.key_dim, m.value_dim, m.conv_dim) == (4, 2, 16, 48, 80)
        assert m.conv1d.groups == m.conv1d.in_channels == m.conv1d.out_channels == 80
    if scores.experts is not None:  # the MoE axes alongside: the dead expert and neurons score 0
        moe = [i for i, _ in _sparse(tiny_model(arch))]
        assert (scores.experts[moe][:, DEAD_EXPERT] == 0).all() and (
            scores.expert_neurons[moe][..., ::4] == 0
        ).all()
        assert (c.num_experts, c.moe_intermediate_size) == (3, 24)
    assert _shapes(AutoModelForCausalLM.from_config(model.config)) == _shapes(model)


def test_pruned_deltanet_models_reload_in_fresh_process(pruned):
    """A plain reload (no hf_minitron) gives the pruned model's logits and generates with the hybrid cache."""
    report = reload_in_fresh_process([pruned[a][4] for a in FAMILIES])
    for arch in FAMILIES:
        assert report[arch]["err"] < 1e-5 and report[arch]["gen"] == 7, arch
        assert report[arch]["minitron"] == pruned[arch][0].config.minitron


def kill_channels(model, channels) -> None:
    """Make hidden channels dead in every kind of layer: never written (embedding, every writer's rows, expert
    outputs), never read (every reader's columns, experts, router, LM head), norm gains at zero output."""
    hidden = model.config.get_text_config().hidden_size
    offset = get_spec(model).norm_weight_offset
    with torch.no_grad():
        model.get_input_embeddings().weight[:, channels] = 0
        model.get_output_embeddings().weight[:, channels] = 0
        for name, module in get_spec(model).layers(model).named_modules():
            leaf = name.rsplit(".", 1)[-1]
            if isinstance(module, torch.nn.Linear):
                if leaf in ("o_proj", "out_proj", "down_proj"):
                    module.weight[channels] = 0
                elif module.in_features == hidden:
                    module.weight[:, channels] = 0
            elif leaf == "experts":
                module.gate_up_proj[:, :, channels] = 0
                module.down_proj[:, channels] = 0
            elif leaf == "gate" and hasattr(module, "top_k"):  # the router
                module.weight[:, channels] = 0
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if "Norm" in type(module).__name__ and weight is not None and weight.shape == (hidden,):
                weight[channels] = -offset


@pytest.mark.parametrize("arch", FAMILIES)
def test_dead_hidden_channels_rank_last_through_every_kind_and_pruning_them_is_exact(arch):
    model = tiny_model(arch)
    dead = torch.arange(0, 64, 4)
    kill_channels(model, dead)
    batch = random_batches(n=1, seed=3)[0]
    before = _logits(model, batch)
    target = PruningConfig(hidden_size=48, importance="activation", rescale_norms=True)
    scores = estimate_importance(model, random_batches(), target)
    assert (scores.channels[dead] == 0).all() and (scores.channels.sum() > 0)
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert model.config.minitron["kept_hidden_channels"] == [i for i in range(64) if i % 4]
    assert _shapes(AutoModelForCausalLM.from_config(model.config)) == _shapes(model)


@pytest.mark.parametrize("arch", FAMILIES)
def test_dead_key_head_drops_with_its_value_heads_exactly(arch):
    """A key head whose value heads are all dead: its whole group (q, k and the value heads) is cut."""
    model = tiny_model(arch)
    kill_value_heads(model, heads=(3, 4, 5))
    batch = random_batches(n=1, seed=2)[0]
    before = _logits(model, batch)
    target = PruningConfig(linear_num_key_heads=1, importance="activation")
    scores = estimate_importance(model, random_batches(), target)
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    c = model.config.get_text_config()
    assert (c.linear_num_value_heads, c.linear_num_key_heads) == (3, 1)  # value heads per key head kept
    assert _shapes(AutoModelForCausalLM.from_config(model.config)) == _shapes(model)


@pytest.mark.parametrize("arch", FAMILIES)
def test_dead_value_head_ranks_last_in_its_key_head_under_taylor_and_magnitude(arch):
    model = tiny_model(arch)
    kill_value_heads(model)
    linear = [i for i, _ in _layers(model, LINEAR)]
    for importance in ("taylor", "magnitude"):
        target = PruningConfig(linear_num_value_heads=4, importance=importance)
        scores = estimate_importance(model, random_batches(), target).linear_heads[linear]
        per_key_head = scores.reshape(len(linear), 2, 3)
        assert (per_key_head.argmin(-1) == torch.tensor([1, 1])).all(), importance
        if (
            importance == "magnitude"
        ):  # Taylor also credits each value head with a share of its key head's q/k
            assert (per_key_head.min(-1).values == 0).all()


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("dead", [0, 1], ids=[LINEAR, FULL])
def test_dead_layer_of_each_kind_ranks_last_and_dropping_it_keeps_the_pattern(arch, dead):
    model = tiny_model(arch)
    kill_layer(model, dead)
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(num_hidden_layers=3, importance="activation")
    scores = estimate_importance(model, random_batches(), target)
    assert scores.layers.argmin() == dead and scores.layers[dead] < 1e-6
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    expected = DELTANET_PATTERN[:dead] + DELTANET_PATTERN[dead + 1 :]
    c = model.config.get_text_config()
    assert c.layer_types == expected and c.num_hidden_layers == 3
    if arch == "qwen3_next":  # the dense-MLP layer (1) is named by its new index
        assert (c.mlp_only_layers, c.decoder_sparse_step) == ([0] if dead == 0 else [], 1)
    for j, layer in enumerate(get_spec(model).layers(model)):
        mixer = layer.linear_attn if expected[j] == LINEAR else layer.self_attn
        assert mixer.layer_idx == j
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
    assert _shapes(fresh) == _shapes(model)
    out = model.generate(batch["input_ids"][:1, :5], max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == 9


@pytest.mark.parametrize("arch", FAMILIES)
def test_every_axis_together_builds_the_shape_from_config_and_generates(arch):
    model = tiny_model(arch)
    sizes = dict(
        hidden_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        linear_num_value_heads=2,
        linear_num_key_heads=1,
        layers_to_drop=[2],
    )
    extra = {  # the family's MLP axes
        "intermediate_size": 96,
        "num_experts": 3,
        "moe_intermediate_size": 24,
        "shared_expert_intermediate_size": 32,
    }
    sizes.update({k: v for k, v in extra.items() if k in get_spec(model).size_keys})
    target = PruningConfig(**sizes)
    prune_model(model, target, estimate_importance(model, random_batches(), target))
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert _shapes(fresh) == _shapes(model)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())
    assert model.config.get_text_config().layer_types == DELTANET_PATTERN[:2] + DELTANET_PATTERN[3:]
    out = model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == 6


BAD = [
    (
        dict(linear_num_value_heads=5),
        r"linear_num_value_heads=5 is invalid: allowed a multiple of linear_num_key_heads=2",
    ),
    (dict(linear_num_value_heads=8), r"linear_num_value_heads=8 is invalid: allowed 1\.\.6"),
    (
        dict(linear_num_value_heads=8, linear_num_key_heads=2),
        r"linear_num_value_heads=8 is invalid: allowed 1\.\.6",
    ),
    (dict(linear_num_key_heads=3), r"linear_num_key_heads=3 is invalid: allowed 1\.\.2"),
    (
        dict(layers_to_drop=[1, 3]),
        r"layer_types=\['linear_attention', 'linear_attention'\] \(after dropping layers \[1, 3\]\) is invalid "
        r"for .*: allowed a pattern with at least one layer of each kind .* \(missing \['full_attention'\]\)",
    ),
]


@pytest.mark.parametrize("arch", FAMILIES)
@pytest.mark.parametrize("request_,match", BAD, ids=[m.split(" ")[0] for _, m in BAD])
def test_bad_requests_name_the_field_and_leave_the_model_untouched(arch, request_, match):
    model = tiny_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        prune_model(model, PruningConfig(importance="activation", **request_))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_olmo_hybrid_config_needs_a_linear_attention_layer_too():
    """OlmoHybridConfig rejects a pattern without DeltaNet layers: refused before surgery, naming layer_types."""
    model = tiny_model("olmo_hybrid")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"layer_types=\['full_attention', 'full_attention'\] .* \(missing \['linear"
    ):
        prune_model(model, PruningConfig(layers_to_drop=[0, 2], importance="activation"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("arch", FAMILIES)
def test_pruned_deltanet_student_distills_with_the_trainer(arch, tmp_path):
    """Width and depth pruned student, hidden-state loss on the kept layers."""
    from distill_worker import tiny_args, token_dataset

    from hf_minitron import DistillationTrainer

    teacher = tiny_model(arch)
    student = tiny_model(arch)
    target = PruningConfig(
        hidden_size=48, linear_num_value_heads=4, layers_to_drop=[2], importance="activation"
    )
    prune_model(student, target, estimate_importance(student, random_batches(), target))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    args = tiny_args(tmp_path, hidden_state_weight=1.0, logging_steps=1)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=token_dataset(8)
    )
    assert trainer.layer_pairs and trainer.layer_pairs[0][1] == [0, 1, 3][trainer.layer_pairs[0][0] + 1] - 1
    trainer.train()
    logged = [row for row in trainer.state.log_history if "loss" in row]
    assert logged and all(torch.isfinite(torch.tensor(row["loss"])) for row in logged)
    assert {"distill_loss", "hidden_state_loss"} <= logged[0].keys()
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())


@pytest.mark.parametrize("arch", ["qwen3_5", "qwen3_5_moe"])
def test_composite_qwen3_5_checkpoint_prunes_as_its_text_model(arch, tmp_path):
    """A vision-language Qwen 3.5 checkpoint loads with AutoModelForCausalLM as its text model (the vision tower
    left out, the same logits), which is what hf-minitron prunes; the pruned text model reloads and generates."""
    from tiny_models import BASE, HYBRID_OVERRIDES
    from transformers import AutoConfig, AutoModelForImageTextToText

    text = {**BASE, **HYBRID_OVERRIDES[f"{arch}_text"]}
    vision = dict(hidden_size=32, intermediate_size=64, depth=1, num_heads=2, out_hidden_size=64)
    torch.manual_seed(0)
    config = AutoConfig.for_model(arch, text_config=text, vision_config=vision)
    AutoModelForImageTextToText.from_config(config).save_pretrained(tmp_path / "vlm")
    full = AutoModelForImageTextToText.from_pretrained(tmp_path / "vlm").eval()
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "vlm").eval()
    assert model.config.model_type == f"{arch}_text" and get_spec(model) is get_spec(f"{arch}_text")
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, full(input_ids=ids).logits)
    target = PruningConfig(linear_num_value_heads=4, hidden_size=48, importance="activation")
    prune_model(model, target, estimate_importance(model, random_batches(), target))
    model.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    assert reloaded.config.linear_num_value_heads == 4 and reloaded.config.hidden_size == 48
    out = reloaded.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == 8
