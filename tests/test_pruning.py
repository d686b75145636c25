"""prune_model against independent references: the unpruned model, plain slicing, and plain transformers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from tiny_models import (
    ARCHITECTURES,
    model_class,
    random_batches,
    tiny_model,
    zero_channels,
    zero_components,
)
from tiny_models import (
    text_config_of as _text,
)
from transformers import AutoModelForCausalLM

from hf_minitron.architectures import get_spec
from hf_minitron.config import PruningConfig
from hf_minitron.importance import ImportanceScores, estimate_importance
from hf_minitron.pruning import prune_model

ZERO_NEURONS = torch.arange(0, 128, 4)  # 32 of 128 MLP neurons in every layer
ZERO_GROUPS = (1, 3)  # KV groups (query heads 2, 3, 6, 7)
ZERO_LAYER = 2


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


ZERO_TARGET = PruningConfig(  # rescale_norms: OLMo 2's q/k norms span all heads
    intermediate_size=96,
    num_key_value_heads=2,
    num_hidden_layers=3,
    importance="activation",
    rescale_norms=True,
)


@pytest.fixture(scope="module")
def zero_pruned(tmp_path_factory):
    """Every architecture with zeroed components, pruned exactly to them and saved (logits recorded)."""
    root = tmp_path_factory.mktemp("zero")
    batch = random_batches(n=1, pad_last=3, seed=1)[0]
    out = {}
    for arch in ARCHITECTURES:
        model = tiny_model(arch)
        zero_components(model)
        before = _logits(model, batch)
        scores = estimate_importance(model, random_batches(pad_last=4), ZERO_TARGET)
        target = ZERO_TARGET
        if get_spec(model).heads_span_hidden:  # heads go only with the hidden size (test_heads_span_hidden)
            target = PruningConfig(intermediate_size=96, num_hidden_layers=3, importance="activation")
        prune_model(model, target, scores)
        after = _logits(model, batch)
        path = root / arch
        model.save_pretrained(path)
        torch.save({"batch": batch, "logits": before}, path / "expected.pt")
        out[arch] = (model, scores, before, after, path)
    return out


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_zero_contribution_ranks_last_and_pruning_it_is_exact(zero_pruned, arch):
    model, scores, before, after, _ = zero_pruned[arch]
    zero = torch.zeros(128, dtype=torch.bool)
    zero[ZERO_NEURONS] = True
    # exactly 0, or (xIELU, whose value at 0 is ~1e-6) negligible next to every live neuron
    assert scores.neurons[:, zero].max() <= 1e-3 * scores.neurons[:, ~zero].min()
    group_scores = scores.heads.reshape(4, 4, 2).sum(-1)
    assert (group_scores[:, list(ZERO_GROUPS)] == 0).all() and (group_scores.sum(1) > 0).all()
    assert scores.layers.argmin() == ZERO_LAYER
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert model.config.minitron["kept_layers"] == [0, 1, 3]
    if not get_spec(model).heads_span_hidden:
        assert _text(model).num_key_value_heads == 2 and _text(model).num_attention_heads == 4
    # the config alone rebuilds exactly this shape
    fresh = model_class(model.config).from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


RELOAD = r"""
import json, sys, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
report = {}
for path in sys.argv[1:]:
    config = AutoConfig.from_pretrained(path)
    auto = AutoModelForCausalLM if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING else AutoModelForImageTextToText
    model = auto.from_pretrained(path).eval()
    expected = torch.load(path + "/expected.pt")
    with torch.no_grad():
        logits = model(**expected["batch"]).logits
    err = (logits - expected["logits"]).abs().max().item()
    gen = model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)
    tied = model.lm_head.weight is model.get_input_embeddings().weight
    report[path] = {"err": err, "gen": gen.shape[1], "tied": tied, "minitron": model.config.minitron,
                    "class": type(model).__name__}
assert not any(m.startswith("hf_minitron") for m in sys.modules)
print(json.dumps(report))
"""


def reload_in_fresh_process(paths) -> dict:
    """Load saved checkpoints with plain transformers in a process that never imports hf_minitron."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    res = subprocess.run(
        [sys.executable, "-c", RELOAD, *map(str, paths)], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return {os.path.basename(k): v for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


def test_zero_pruned_reload_in_fresh_process(zero_pruned):
    report = reload_in_fresh_process([zero_pruned[a][-1] for a in ARCHITECTURES])
    for arch in ARCHITECTURES:
        model = zero_pruned[arch][0]
        assert report[arch]["err"] < 1e-5, arch
        assert report[arch]["gen"] == 7, arch
        assert report[arch]["tied"] == (model.lm_head.weight is model.get_input_embeddings().weight), arch
        assert report[arch]["minitron"] == model.config.minitron
        assert report[arch]["class"] == type(model).__name__  # a composite reloads with its own Auto class


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_no_targets_keeps_logits(arch):
    model = tiny_model(arch)
    batch = random_batches(n=1)[0]
    before = _logits(model, batch)
    scores = estimate_importance(model, random_batches(), PruningConfig(importance="activation"))
    assert (
        scores.neurons is None and scores.heads is None and scores.channels is None and scores.layers is None
    )
    prune_model(model, PruningConfig(importance="activation"), scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=0, rtol=0)


def _manual_scores(model, seed=0) -> ImportanceScores:
    g = torch.Generator().manual_seed(seed)
    c = _text(model)
    return ImportanceScores(
        neurons=torch.rand(c.num_hidden_layers, c.intermediate_size, generator=g),
        heads=torch.rand(c.num_hidden_layers, c.num_attention_heads, generator=g),
        channels=torch.rand(c.hidden_size, generator=g),
        layers=torch.rand(c.num_hidden_layers, generator=g),
        metadata={"depth_metric": "block_importance"},
    )


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_channel_pruning_keeps_top_channels_in_order(arch):
    model = tiny_model(arch)
    spec = get_spec(model)
    if spec.heads_span_hidden:
        pytest.skip(
            "heads go with the hidden size (test_heads_span_hidden_prunes_heads_with_the_hidden_size)"
        )
    scores = _manual_scores(model)
    keep = sorted(torch.topk(scores.channels, 40).indices.tolist())
    ref = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        embedded = spec.embed(model)(ids)
    prune_model(model, PruningConfig(hidden_size=40, importance="activation"), scores)
    sd = model.state_dict()
    assert model.config.minitron["kept_hidden_channels"] == keep
    for name, value in sd.items():
        old = ref[name]
        if "vision" in name or "multi_modal_projector" in name:
            continue
        if ("embed_tokens" in name or "lm_head" in name) and name.endswith("weight"):
            if not spec.embed_scale_from_hidden_size:
                torch.testing.assert_close(value, old[:, keep], atol=0, rtol=0)
        elif name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            if old.shape != (64,) or ".self_attn." in name:  # q/k norms go with heads, not channels
                assert value.shape == old.shape
            elif not (name == spec.final_norm_path + ".weight" and spec.embed_scale_from_hidden_size):
                # the gain follows the narrower statistic when the family rescales: sqrt(64 / 40) on (offset + w)
                factor = (64 / 40) ** 0.5 if spec.rescale_norms else 1.0
                offset = spec.norm_weight_offset
                expected = (offset + old[keep]) * factor - offset
                torch.testing.assert_close(value, expected, atol=1e-6, rtol=1e-6)
        elif name.endswith("norm.bias"):
            torch.testing.assert_close(value, old[keep], atol=0, rtol=0)
        elif any(
            p in name for p in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "up_proj", "gate_proj")
        ):
            torch.testing.assert_close(value, old[:, keep], atol=0, rtol=0)
        elif "o_proj.weight" in name or "down_proj.weight" in name:
            torch.testing.assert_close(value, old[keep], atol=0, rtol=0)
    # what the kept channels receive from the embedding is unchanged (Gemma's sqrt(hidden) scale compensated)
    with torch.no_grad():
        torch.testing.assert_close(spec.embed(model)(ids), embedded[..., keep], atol=1e-5, rtol=1e-5)
    if model.config.tie_word_embeddings:
        assert spec.lm_head(model).weight is spec.embed(model).weight
    for module in spec.layers(model).modules():
        if hasattr(module, "normalized_shape"):
            assert tuple(module.normalized_shape) == (40,)


DEAD_CHANNELS = torch.arange(0, 64, 4)  # 16 of 64 hidden channels


def _centres(norm) -> bool:
    """Whether a norm subtracts the mean (LayerNorm): a constant input then normalizes to its bias."""
    with torch.no_grad():
        x = torch.ones(1, norm.weight.shape[0])
        out = norm(x) - (norm.bias if getattr(norm, "bias", None) is not None else 0)
    return bool(out.abs().max() < 1e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_dead_channels_rank_last_and_pruning_them_keeps_logits(arch):
    """Channels nothing writes or reads rank last under the default criterion; cutting exactly them keeps the
    logits (RMS norms rescale their gain to the narrower statistic; epsilon made negligible)."""
    model = tiny_model(arch, rms_norm_eps=1e-12)
    spec = get_spec(model)
    zero_channels(model, DEAD_CHANNELS)
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(hidden_size=48, rescale_norms=True)
    scores = estimate_importance(model, random_batches(), target)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[DEAD_CHANNELS] = True
    assert scores.channels[dead].max() <= 1e-6 * scores.channels[~dead].min(), scores.metadata["importance"]
    if spec.heads_span_hidden:
        with pytest.raises(ValueError, match="num_attention_heads"):
            prune_model(model, target, scores)
        return
    prune_model(model, target, scores)
    assert model.config.minitron["kept_hidden_channels"] == (~dead).nonzero().flatten().tolist()
    if not _centres(spec.final_norm(model)):
        torch.testing.assert_close(_logits(model, batch), before, atol=1e-4, rtol=1e-4)
    fresh = model_class(model.config).from_config(model.config)
    assert sum(p.numel() for p in fresh.parameters()) == sum(p.numel() for p in model.parameters())


def test_heads_span_hidden_prunes_heads_with_the_hidden_size():
    model = tiny_model("stablelm")
    scores = _manual_scores(model)
    with pytest.raises(ValueError, match=r"num_attention_heads=8 with hidden_size=48 .* allowed"):
        prune_model(model, PruningConfig(hidden_size=48), scores)
    prune_model(model, PruningConfig(hidden_size=32, num_attention_heads=4, num_key_value_heads=2), scores)
    model(**random_batches(n=1)[0])
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_head_pruning_keeps_best_heads_within_groups(arch):
    model = tiny_model(arch)
    scores = _manual_scores(model)
    scores.heads = torch.tensor([[0.1, 0.9, 0.8, 0.7, 0.5, 0.6, 0.2, 0.3]] * 4)
    q_before = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    k_before = model.model.layers[0].self_attn.k_proj.weight.detach().clone()
    prune_model(model, PruningConfig(num_attention_heads=4, importance="activation"), scores)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads, model.config.head_dim) == (
        4,
        4,
        8,
    )
    heads = [1, 2, 5, 7]  # best head of each group (0,1), (2,3), (4,5), (6,7)
    rows = torch.cat([torch.arange(h * 8, h * 8 + 8) for h in heads])
    torch.testing.assert_close(model.model.layers[0].self_attn.q_proj.weight, q_before[rows], atol=0, rtol=0)
    torch.testing.assert_close(model.model.layers[0].self_attn.k_proj.weight, k_before, atol=0, rtol=0)
    model(**random_batches(n=1)[0])


def test_kv_group_pruning_drops_whole_groups():
    model = tiny_model("llama")
    scores = _manual_scores(model)
    scores.heads = torch.tensor(
        [[0.1, 0.9, 0.1, 0.1, 0.5, 0.6, 0.2, 0.3]] * 4
    )  # groups 0.1+0.9, 0.2, 1.1, 0.5
    k_before = model.model.layers[1].self_attn.k_proj.weight.detach().clone()
    prune_model(model, PruningConfig(num_key_value_heads=2, importance="activation"), scores)
    assert (model.config.num_attention_heads, model.config.num_key_value_heads) == (4, 2)
    rows = torch.cat([torch.arange(0, 8), torch.arange(16, 24)])
    torch.testing.assert_close(model.model.layers[1].self_attn.k_proj.weight, k_before[rows], atol=0, rtol=0)
    assert model.model.layers[1].self_attn.num_key_value_groups == 2


def test_head_carry_over_formula():
    model = tiny_model("llama", num_attention_heads=8, num_key_value_heads=1)
    scores = _manual_scores(model)
    order = [3, 0, 5, 1, 7, 2, 6, 4]  # heads from best to worst
    scores.heads = torch.zeros(4, 8)
    scores.heads[:, order] = torch.linspace(1, 0.1, 8)
    w = model.model.layers[0].self_attn.o_proj.weight.detach().clone().reshape(64, 8, 8)
    prune_model(
        model, PruningConfig(num_attention_heads=4, head_carry_over=True, importance="activation"), scores
    )
    # L=8, K=4: ranks i = 1..4 absorb ranks 2K-i+1 = 8..5
    expected = {}
    for i in range(1, 5):
        keep, pruned = order[i - 1], order[2 * 4 - i]
        expected[keep] = 2 * w[:, keep] - w[:, pruned]
    kept = sorted(order[:4])
    new = model.model.layers[0].self_attn.o_proj.weight.detach().reshape(64, 4, 8)
    for j, h in enumerate(kept):
        torch.testing.assert_close(new[:, j], expected[h], atol=1e-6, rtol=1e-6)


def test_depth_renumbers_layer_index_and_layer_types(tmp_path):
    model = tiny_model("gemma2")
    types = list(model.config.layer_types)
    prune_model(model, PruningConfig(layers_to_drop=[0], importance="activation"))
    assert model.config.layer_types == types[1:]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]
    assert [layer.self_attn.sliding_window for layer in model.model.layers] == [None, 16, None]
    model.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, do_sample=False)
    qwen = tiny_model("qwen2", use_sliding_window=True, sliding_window=8, max_window_layers=2)
    prune_model(qwen, PruningConfig(layers_to_drop=[1, 2], importance="activation"))
    assert qwen.config.max_window_layers == 1 and qwen.config.num_hidden_layers == 2


def test_repeated_pruning_composes_provenance():
    model = tiny_model("llama")
    prune_model(
        model,
        PruningConfig(layers_to_drop=[1], hidden_size=48, importance="activation"),
        _manual_scores(model, 1),
    )
    first = dict(model.config.minitron)
    prune_model(
        model,
        PruningConfig(layers_to_drop=[0], hidden_size=32, importance="activation"),
        _manual_scores(model, 2),
    )
    record = model.config.minitron
    assert record["kept_layers"] == first["kept_layers"][1:] == [2, 3]
    assert record["source_hidden_size"] == 64 and record["source_num_hidden_layers"] == 4
    assert set(record["kept_hidden_channels"]) <= set(first["kept_hidden_channels"])
    assert len(record["kept_hidden_channels"]) == 32


def test_contiguous_depth_drops_the_zeroed_block():
    model = tiny_model("llama")
    with torch.no_grad():
        for layer in model.model.layers[1:3]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    batch = random_batches(n=1)[0]
    before = _logits(model, batch)
    config = PruningConfig(num_hidden_layers=2, depth_metric="contiguous", importance="activation")
    scores = estimate_importance(model, random_batches(), config)
    prune_model(model, config, scores)
    assert model.config.minitron["kept_layers"] == [0, 3]
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="num_hidden_layers"):
        prune_model(
            tiny_model("llama"),
            PruningConfig(num_hidden_layers=3, depth_metric="contiguous", importance="activation"),
            scores,
        )


BAD_REQUESTS = [
    (PruningConfig(hidden_size=65, importance="activation"), "hidden_size=65"),
    (PruningConfig(intermediate_size=129, importance="activation"), "intermediate_size=129"),
    (PruningConfig(num_hidden_layers=5, importance="activation"), "num_hidden_layers=5"),
    (PruningConfig(num_key_value_heads=5, importance="activation"), "num_key_value_heads=5"),
    (
        PruningConfig(num_attention_heads=6, importance="activation"),
        "num_attention_heads=6",
    ),  # 6 is not a multiple of 4 KV groups
    (
        PruningConfig(num_attention_heads=12, num_key_value_heads=2, importance="activation"),
        "num_attention_heads=12",
    ),  # 6 per group > 2
    (PruningConfig(layers_to_drop=[4], importance="activation"), "layers_to_drop"),
    (PruningConfig(layers_to_drop=[0, 1, 2, 3], importance="activation"), "layers_to_drop"),
    (PruningConfig(layers_to_drop=[1], num_hidden_layers=2, importance="activation"), "num_hidden_layers=2"),
]


@pytest.mark.parametrize("config,match", BAD_REQUESTS, ids=[m for _, m in BAD_REQUESTS])
def test_bad_requests_raise_and_leave_model_untouched(config, match):
    model = tiny_model("llama")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    with pytest.raises(ValueError, match=match) as info:
        prune_model(model, config, _manual_scores(model))
    assert "allowed" in str(info.value)
    assert model.config.to_dict() == config_before
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)


def test_scores_for_another_shape_or_missing_axis_are_refused():
    model = tiny_model("llama")
    other = _manual_scores(tiny_model("llama", intermediate_size=96))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="scores.neurons"):
        prune_model(model, PruningConfig(intermediate_size=64, importance="activation"), other)
    partial = _manual_scores(model)
    partial.channels = None
    with pytest.raises(ValueError, match="scores.channels"):
        prune_model(
            model, PruningConfig(intermediate_size=64, hidden_size=32, importance="activation"), partial
        )
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_unsupported_model_type_is_refused():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32))
    with pytest.raises(ValueError, match="gpt2.*llama"):
        prune_model(model, PruningConfig(hidden_size=8, importance="activation"), None)


def test_pruning_keeps_dtype_device_and_requires_grad():
    model = tiny_model("qwen2").to(torch.bfloat16)
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    prune_model(
        model,
        PruningConfig(intermediate_size=64, hidden_size=32, importance="activation"),
        _manual_scores(model),
    )
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert not model.model.layers[0].mlp.up_proj.weight.requires_grad
    assert model.model.layers[1].mlp.up_proj.weight.requires_grad
    assert model.model.layers[0].mlp.up_proj.weight.shape == (64, 32)


def test_parameter_budget_resolves_to_explicit_widths():
    model = tiny_model("llama")
    config = PruningConfig(target_params=int(0.7 * model.num_parameters()))
    scores = estimate_importance(model, random_batches(n=1), config)
    assert all(getattr(scores, n) is not None for n in ("neurons", "heads", "channels", "layers"))
    prune_model(model, config, scores)
    assert model.config.hidden_size < 64 or model.config.intermediate_size < 128
    assert model.config.num_hidden_layers == 4
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert fresh.num_parameters() == model.num_parameters()
    assert abs(model.num_parameters() / config.target_params - 1) < 0.1


def _phi3_and_unfused_llama():
    """A tiny Phi-3 and the Llama with the same weights split out of its fused projections (same logits)."""
    phi3 = tiny_model("phi3", tie_word_embeddings=False)
    c = phi3.config
    llama = tiny_model("llama", rms_norm_eps=c.rms_norm_eps, hidden_act=c.hidden_act, rope_theta=10000.0)
    sd = {}
    n_q, n_kv, inter = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
        c.intermediate_size,
    )
    for name, value in phi3.state_dict().items():
        if "qkv_proj" in name:
            q, k, v = value.split([n_q, n_kv, n_kv])
            for part, tensor in zip(("q", "k", "v"), (q, k, v)):
                sd[name.replace("qkv_proj", f"{part}_proj")] = tensor
        elif "gate_up_proj" in name:
            gate, up = value.split([inter, inter])
            sd[name.replace("gate_up_proj", "gate_proj")], sd[name.replace("gate_up_proj", "up_proj")] = (
                gate,
                up,
            )
        else:
            sd[name] = value
    llama.load_state_dict(sd)
    return phi3, llama


def test_fused_projections_prune_like_the_unfused_model():
    """Heads and neurons cut out of qkv_proj / gate_up_proj give the logits of the same cut on split weights."""
    phi3, llama = _phi3_and_unfused_llama()
    batch = random_batches(n=1)[0]
    torch.testing.assert_close(_logits(phi3, batch), _logits(llama, batch), atol=1e-5, rtol=1e-5)
    scores = _manual_scores(llama, seed=3)
    target = PruningConfig(intermediate_size=80, num_attention_heads=4, num_key_value_heads=2, hidden_size=48)
    prune_model(phi3, target, scores)
    prune_model(llama, target, scores)
    assert phi3.model.layers[0].self_attn.qkv_proj.weight.shape == (4 * 8 + 2 * 2 * 8, 48)
    assert phi3.model.layers[0].mlp.gate_up_proj.weight.shape == (2 * 80, 48)
    torch.testing.assert_close(_logits(phi3, batch), _logits(llama, batch), atol=1e-5, rtol=1e-5)


def test_composite_checkpoint_prunes_its_text_part_and_still_sees_images():
    """Gemma 3 with a vision tower: the text part shrinks, the projector writes the new hidden size."""
    model = tiny_model("gemma3")
    vision_before = {n: p.clone() for n, p in model.named_parameters() if "vision_tower" in n}
    scores = _manual_scores(model)
    prune_model(model, PruningConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=3), scores)
    text = model.config.get_text_config()
    assert (text.hidden_size, text.intermediate_size, text.num_hidden_layers) == (48, 64, 3)
    assert model.model.multi_modal_projector.mm_input_projection_weight.shape == (32, 48)
    for n, p in model.named_parameters():
        if "vision_tower" in n:
            torch.testing.assert_close(p, vision_before[n], atol=0, rtol=0)
    image_token = model.config.image_token_id
    ids = torch.tensor([[1, 5] + [image_token] * model.config.mm_tokens_per_image + [6, 7]])
    pixels = torch.randn(1, 3, 28, 28)
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids))
    assert out.logits.shape == (1, ids.shape[1], text.vocab_size) and torch.isfinite(out.logits).all()


def test_scores_saved_by_0_1_0_still_load(tmp_path):
    """0.1.0 wrote one tensor per axis under these names with JSON metadata: they load and prune."""
    from safetensors.torch import save_file

    model = tiny_model("llama")
    g = torch.Generator().manual_seed(0)
    tensors = {"neurons": torch.rand(4, 128, generator=g), "heads": torch.rand(4, 8, generator=g)}
    tensors |= {"channels": torch.rand(64, generator=g), "layers": torch.rand(4, generator=g)}
    metadata = {"importance": '"activation"', "depth_metric": '"block_importance"', "num_samples": "6"}
    save_file(tensors, tmp_path / "importance.safetensors", metadata=metadata)
    scores = ImportanceScores.load(tmp_path / "importance.safetensors")
    assert scores.metadata["num_samples"] == 6
    torch.testing.assert_close(scores.neurons, tensors["neurons"])
    prune_model(model, PruningConfig(hidden_size=48, intermediate_size=64, num_hidden_layers=3), scores)
    assert model.config.minitron["kept_layers"] == sorted(tensors["layers"].topk(3).indices.tolist())


def test_refused_size_names_the_nearest_accepted_ones():
    """LlamaConfig refuses hidden % heads != 0: the error gives the closest sizes it accepts."""
    model = tiny_model("llama")
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"hidden_size=60 is invalid .* allowed nearest 56 or 64"):
        prune_model(model, PruningConfig(hidden_size=60), _manual_scores(model))
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


def test_depth_by_scores_keeps_a_full_attention_layer():
    model = tiny_model("gemma3_text")
    assert model.config.layer_types == ["sliding_attention", "full_attention"] * 2
    scores = _manual_scores(model)
    scores.layers = torch.tensor([1.0, 0.0, 1.0, 0.0])  # the full-attention layers rank lowest
    with pytest.raises(ValueError, match="full-attention .* layers_to_drop"):
        prune_model(model, PruningConfig(num_hidden_layers=2), scores)
    prune_model(model, PruningConfig(layers_to_drop=[1, 3]), scores)  # asked explicitly
    assert model.config.layer_types == ["sliding_attention"] * 2


def test_per_layer_lists_follow_the_kept_layers():
    model = tiny_model("smollm3")
    flags = list(model.config.no_rope_layers)
    prune_model(model, PruningConfig(layers_to_drop=[0, 2]), None)
    assert model.config.no_rope_layers == [flags[1], flags[3]]
    model(**random_batches(n=1)[0])


def test_phi3_longrope_factors_refuse_a_new_head_size_before_surgery():
    """Phi-3's LongRoPE factor lists are as long as (hidden_size // heads) / 2: the config class refuses other
    hidden sizes, and prune_model says so before touching the model."""
    rope = {"rope_type": "longrope", "rope_theta": 1e4, "short_factor": [1.0] * 4, "long_factor": [1.0] * 4}
    model = tiny_model("phi3", rope_parameters=rope, original_max_position_embeddings=128)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"(?s)hidden_size=48 is invalid for Phi3Config: allowed nearest 64 .*short_factor"
    ):
        prune_model(model, PruningConfig(hidden_size=48), _manual_scores(model))
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())


def test_rescale_norms_follows_the_family_default_unless_set():
    """`rescale_norms=None` takes the spec's measured default (on for Qwen, off for Gemma); a bool overrides it."""
    for arch, default in (("qwen2", True), ("gemma2", False)):
        for asked, expect in ((None, default), (True, True), (False, False)):
            model = tiny_model(arch)
            gain = model.model.layers[0].input_layernorm.weight.detach().clone()
            scores = _manual_scores(model)
            prune_model(model, PruningConfig(hidden_size=32, rescale_norms=asked), scores)
            keep = torch.tensor(model.config.minitron["kept_hidden_channels"])
            offset = get_spec(model).norm_weight_offset
            factor = 2**0.5 if expect else 1.0
            torch.testing.assert_close(
                model.model.layers[0].input_layernorm.weight.detach(), (offset + gain[keep]) * factor - offset
            )
