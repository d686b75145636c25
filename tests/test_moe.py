"""Mixture-of-experts families: experts, expert neurons and shared experts against independent references."""

from __future__ import annotations

import pytest
import torch
from test_pruning import reload_in_fresh_process
from tiny_models import MOE, random_batches, tiny_model, zero_channels
from transformers import AutoModelForCausalLM

from hf_minitron.architectures import get_spec
from hf_minitron.architectures.dimensions import unit_shape
from hf_minitron.config import PruningConfig
from hf_minitron.counting import count_active_parameters, count_parameters, flops_per_token
from hf_minitron.importance import ImportanceScores, estimate_importance
from hf_minitron.importance.experts import ExpertStatistic, observed_experts_forward
from hf_minitron.importance.hooks import HookSet
from hf_minitron.importance.taylor import estimate_taylor_importance
from hf_minitron.pruning import prune_model
from hf_minitron.pruning.budget import resolve_target_params

DEAD_EXPERT = 1  # of 4, in every MoE layer
DEAD_NEURONS = torch.arange(0, 32, 4)  # 8 of 32 neurons of every expert


def _logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


def _sparse(model):
    """(layer index, MoE block) for the layers with experts, found on transformers' own module names."""
    blocks = [_first_of(layer, "mlp", "feed_forward", "block_sparse_moe") for layer in model.model.layers]
    return [(i, block) for i, block in enumerate(blocks) if hasattr(block, "experts")]


def _first_of(module, *names):
    return next(getattr(module, n) for n in names if hasattr(module, n))


def _router(block):
    return block.router if hasattr(block, "router") else block.gate


def _keys(model) -> tuple[str, str]:
    """(experts key, expert width key) of the family, from its spec."""
    spec = get_spec(model)
    return spec.group("experts").key, spec.group("expert_neurons").key


def kill_expert(model, expert: int = DEAD_EXPERT) -> None:
    """An expert that outputs zero and that the router never selects: hidden channel 0 carries a large constant
    (embedding column), that only the expert's router row reads, with a large negative weight (and bias)."""
    with torch.no_grad():
        model.get_input_embeddings().weight[:, 0] = 1.0
        for _, block in _sparse(model):
            router = _router(block)
            router.weight.mul_(100.0)  # decisive routing: every live expert sees tokens
            router.weight[:, 0] = 0
            router.weight[expert] = 0
            router.weight[expert, 0] = -1000.0
            if getattr(router, "bias", None) is not None:
                router.bias[expert] = -1e4
            if hasattr(router, "e_score_correction_bias"):  # GLM-4-MoE: only the selection reads it
                router.e_score_correction_bias[expert] = -1e4
            if hasattr(router, "moe_statics"):  # ERNIE-4.5: the same, as a [1, E] parameter
                router.moe_statics.e_score_correction_bias[0, expert] = -1e4
            block.experts.down_proj[expert] = 0
            if getattr(block.experts, "down_proj_bias", None) is not None:
                block.experts.down_proj_bias[expert] = 0


def kill_neurons(model, neurons=DEAD_NEURONS) -> None:
    """Zero gate inputs for the same neurons of every expert: silu(0) = 0 and gpt-oss's clamped GLU of 0 is 0;
    and the same neurons of a shared expert (Llama 4, GLM-4-MoE and ERNIE-4.5 prune it with the experts' width)."""
    with torch.no_grad():
        for _, block in _sparse(model):
            experts = block.experts
            if not getattr(experts, "is_concatenated", True):  # [E, H, 2I], interleaved gate/up columns
                experts.gate_up_proj[:, :, 2 * neurons] = 0
                experts.gate_up_proj_bias[:, 2 * neurons] = 0
            elif getattr(experts, "is_transposed", True):  # [E, H, 2I], [gate | up] columns (Llama 4)
                experts.gate_up_proj[:, :, neurons] = 0
            else:  # [E, 2I, H], [gate | up] rows
                experts.gate_up_proj[:, neurons] = 0
            shared = getattr(block, "shared_expert", None) or getattr(block, "shared_experts", None)
            if shared is not None:  # ERNIE's are r experts wide: a unit is r adjacent neurons
                r = (
                    shared.up_proj.weight.shape[0]
                    // experts.down_proj.shape[1 if getattr(experts, "is_transposed", True) else 2]
                )
                shared.up_proj.weight[(neurons[:, None] * r + torch.arange(r)).flatten()] = 0


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    """Every MoE family with a dead expert and dead expert neurons, pruned exactly to them and saved."""
    root = tmp_path_factory.mktemp("moe")
    batch = random_batches(n=1, pad_last=3, seed=1)[0]
    out = {}
    for arch in MOE:
        model = tiny_model(arch)
        kill_expert(model)
        kill_neurons(model)
        before = _logits(model, batch)
        experts_key, width_key = _keys(model)
        target = PruningConfig(importance="activation", **{experts_key: 3, width_key: 24})
        # the checked batch among the calibration ones: every expert it routes to has been observed
        scores = estimate_importance(model, [*random_batches(pad_last=4), batch], target)
        prune_model(model, target, scores)
        path = root / arch
        model.save_pretrained(path)
        torch.save({"batch": batch, "logits": before}, path / "expected.pt")
        out[arch] = (model, scores, before, _logits(model, batch), path)
    return out


@pytest.mark.parametrize("arch", MOE)
def test_dead_expert_and_neurons_rank_last_and_pruning_them_is_exact(pruned, arch):
    model, scores, before, after, _ = pruned[arch]
    moe_layers = [i for i, _ in _sparse(tiny_model(arch))]
    experts = scores.experts[moe_layers]
    assert (experts[:, DEAD_EXPERT] == 0).all() and ((experts > 0).sum(1) >= 2).all()  # top-2 routing
    neurons = scores.expert_neurons[moe_layers]
    dead = torch.zeros(32, dtype=torch.bool)
    dead[DEAD_NEURONS] = True
    assert (neurons[..., dead] == 0).all()
    routed = neurons.sum(-1) > 0  # experts that saw tokens: every live neuron scores above 0
    assert torch.equal(routed, experts > 0)
    assert (neurons[routed][:, ~dead] > 0).all()
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    experts_key, width_key = _keys(model)
    assert getattr(model.config, experts_key) == 3 and getattr(model.config, width_key) == 24
    for _, block in _sparse(model):
        assert block.experts.num_experts == 3 and _router(block).weight.shape[0] == 3
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert sum(p.numel() for p in model.parameters()) == count_parameters(model.config)


def test_pruned_moe_reloads_in_fresh_process(pruned):
    report = reload_in_fresh_process([pruned[a][-1] for a in MOE])
    for arch in MOE:
        assert report[arch]["err"] < 1e-5, arch
        assert report[arch]["gen"] == 7, arch
        assert report[arch]["minitron"] == pruned[arch][0].config.minitron


@pytest.mark.parametrize("criterion", ["frequency", "gate"])
def test_alternative_expert_criteria_rank_the_dead_expert_last(criterion):
    model = tiny_model("qwen3_moe")
    kill_expert(model)
    config = PruningConfig(num_experts=3, importance="activation", expert_importance=criterion)
    scores = estimate_importance(model, random_batches(), config)
    assert scores.metadata["expert_importance"] == criterion
    moe = scores.experts[[0, 2, 3]]  # layer 1 is dense (mlp_only_layers)
    assert (moe[:, DEAD_EXPERT] == 0).all() and (moe.sum(1) > 0).all()
    if criterion == "frequency":  # each token picks 2 of the experts: frequencies sum to top-k
        torch.testing.assert_close(moe.sum(1), torch.full((3,), 2.0))


def test_experts_are_ranked_by_reap_whatever_the_width_criterion():
    model = tiny_model("qwen3_moe")
    kill_expert(model)
    batches = random_batches()
    taylor = estimate_importance(
        model, batches, PruningConfig(num_experts=3, moe_intermediate_size=16, importance="taylor")
    )
    activation = estimate_importance(
        model, batches, PruningConfig(num_experts=3, moe_intermediate_size=16, importance="activation")
    )
    assert taylor.metadata["importance"] == "taylor" and taylor.metadata["expert_importance"] == "reap"
    torch.testing.assert_close(taylor.experts, activation.experts, atol=0, rtol=0)
    assert not torch.allclose(taylor.expert_neurons, activation.expert_neurons)  # widths: Taylor


@pytest.mark.parametrize("arch", MOE)
def test_observed_forward_matches_the_stock_experts(arch):
    """The statistics pass computes what transformers computes, and counts every routed (token, expert) pair."""
    model = tiny_model(arch)
    batch = random_batches(n=1)[0]
    before = _logits(model, batch)
    stats = []
    with HookSet() as hooks:
        for _, block in _sparse(model):
            stats.append(ExpertStatistic(4, 32, squares=False))
            hooks.patch(
                block.experts, observed_experts_forward(block.experts, stats[-1], lambda n, d: torch.ones(n))
            )
        during = _logits(model, batch)
    torch.testing.assert_close(during, before, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(_logits(model, batch), before, atol=0, rtol=0)  # original forward restored
    for stat in stats:  # every token goes to top-k experts
        assert stat.count.sum() == batch["input_ids"].numel() * model.config.num_experts_per_tok


@pytest.mark.parametrize("criterion", ["taylor", "magnitude"])
@pytest.mark.parametrize("arch", ["ernie4_5_moe", "glm4_moe", "gpt_oss", "granitemoeshared", "qwen2_moe"])
def test_gradient_and_weight_criteria_score_expert_groups(arch, criterion):
    model = tiny_model(arch)
    kill_expert(model)
    experts_key, width_key = _keys(model)
    config = PruningConfig(importance=criterion, **{experts_key: 3, width_key: 24})
    if criterion == "taylor":  # the criterion itself (estimate_importance ranks experts by REAP)
        scores = estimate_taylor_importance(model, random_batches(), config)
    else:
        scores = estimate_importance(model, None, config)
    assert scores.experts.shape == (4, 4) and scores.expert_neurons.shape == (4, 4, 32)
    moe = [i for i, _ in _sparse(model)]
    if criterion == "taylor":  # never routed, zero output: no gradient reaches it
        assert (scores.experts[moe, DEAD_EXPERT] <= 1e-6 * scores.experts[moe].max()).all()
    else:  # its down projection is zero: the product of norms is 0
        assert (scores.experts[moe, DEAD_EXPERT] == 0).all()
    prune_model(model, config, scores)
    model(**random_batches(n=1)[0])


@pytest.mark.parametrize("arch", MOE)
def test_router_aux_loss_works_after_pruning_experts(arch):
    """The LM caches the expert count for the load-balancing loss: it follows the pruned config."""
    model = tiny_model(arch, output_router_logits=True)
    experts_key, _ = _keys(model)
    prune_model(model, PruningConfig(importance="activation", **{experts_key: 3}), _manual_scores(model))
    batch = random_batches(n=1)[0]
    out = model(**batch, labels=batch["input_ids"])
    if getattr(out, "aux_loss", None) is None:
        pytest.skip(f"{arch} computes no router auxiliary loss")
    fresh = AutoModelForCausalLM.from_config(model.config)
    fresh.load_state_dict(model.state_dict())
    expected = fresh.eval()(**batch, labels=batch["input_ids"])
    torch.testing.assert_close(out.aux_loss, expected.aux_loss)
    torch.testing.assert_close(out.loss, expected.loss)


def test_shared_expert_width_prunes_like_a_dense_mlp():
    model = tiny_model("qwen2_moe")
    with torch.no_grad():
        for _, block in _sparse(model):
            block.shared_expert.up_proj.weight[:16] = 0
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    config = PruningConfig(shared_expert_intermediate_size=32, importance="activation")
    scores = estimate_importance(model, random_batches(), config)
    assert set(scores.tensors) == {"shared_neurons"}
    assert (scores.shared_neurons[[1, 3], :16] == 0).all() and (scores.shared_neurons[[1, 3], 16:] > 0).all()
    prune_model(model, config, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-5, rtol=1e-5)
    assert model.model.layers[1].mlp.shared_expert.down_proj.weight.shape == (64, 32)


def test_depth_pruning_keeps_dense_and_sparse_layers_apart(tmp_path):
    """Qwen-MoE derives a layer's kind from its index: after dropping one, the config names the dense ones."""
    model = tiny_model("qwen2_moe")  # decoder_sparse_step=2: layers 1, 3 sparse
    batch = random_batches(n=1)[0]
    prune_model(model, PruningConfig(layers_to_drop=[0], importance="activation"))
    assert model.config.decoder_sparse_step == 1 and model.config.mlp_only_layers == [1]
    kinds = [hasattr(layer.mlp, "experts") for layer in model.model.layers]
    assert kinds == [True, False, True]
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", MOE)
def test_active_parameters_match_a_hand_count(arch):
    model = tiny_model(arch)
    c = model.config
    experts_key, _ = _keys(model)
    n_experts, k = getattr(c, experts_key), c.num_experts_per_tok
    routed = sum(sum(p.numel() for p in block.experts.parameters()) for _, block in _sparse(model))
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(c) == total
    assert count_active_parameters(c) == total - routed + routed * k // n_experts
    # after pruning to 3 experts, from the config alone
    three = {experts_key: 3}
    per_expert = routed // n_experts
    assert count_active_parameters(c, three) == count_parameters(c, three) - per_expert * (3 - k)
    assert count_active_parameters(tiny_model("llama").config) == count_parameters(tiny_model("llama").config)


@pytest.mark.parametrize("arch", ["mixtral", "qwen2_moe"])
def test_flops_per_token_count_the_experts_a_token_runs(arch):
    model = tiny_model(arch)
    c = model.config
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    expert_matrices = sum(
        p.numel() for _, block in _sparse(model) for p in block.experts.parameters() if p.dim() == 3
    )
    experts_key, _ = _keys(model)
    attention = 4 * c.num_attention_heads * c.head_dim * 64 * c.num_hidden_layers  # 64 tokens of context
    expected = 2 * (linear + expert_matrices * c.num_experts_per_tok // getattr(c, experts_key)) + attention
    assert flops_per_token(c, seq_len=64) == expected


BAD = [
    ("qwen3_moe", dict(num_experts=5), "num_experts=5"),
    ("qwen3_moe", dict(num_experts=1), r"num_experts=1 .*2\.\.4.*num_experts_per_tok=2"),
    ("qwen3_moe", dict(moe_intermediate_size=33), "moe_intermediate_size=33"),
    ("mixtral", dict(num_experts=3), "num_experts=3 .*mixtral|num_experts=3"),
    ("gpt_oss", dict(num_local_experts=1), "num_local_experts=1"),
    ("llama", dict(moe_intermediate_size=8), "moe_intermediate_size=8"),
]


@pytest.mark.parametrize("arch,sizes,match", BAD, ids=[f"{a}-{list(s)[0]}" for a, s, _ in BAD])
def test_bad_expert_requests_raise_and_leave_model_untouched(arch, sizes, match):
    model = tiny_model(arch)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = model.config.to_dict()
    with pytest.raises(ValueError, match=match) as info:
        prune_model(model, PruningConfig(importance="activation", **sizes))
    assert "allowed" in str(info.value)
    assert model.config.to_dict() == before
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_non_positive_expert_sizes_are_refused():
    with pytest.raises(ValueError, match="num_experts=0 is invalid: allowed a positive integer"):
        PruningConfig(num_experts=0)
    with pytest.raises(ValueError, match="expert_importance='x'"):
        PruningConfig(expert_importance="x")


@pytest.mark.parametrize("arch", MOE)
def test_budgets_resolve_experts_and_expert_width_exactly(arch):
    """target_active_params picks the expert width, target_params the experts: exact counts from the config."""
    model = tiny_model(arch)
    c = model.config
    experts_key, width_key = _keys(model)
    goal = {experts_key: 3, width_key: 16}
    config = PruningConfig(
        target_params=count_parameters(c, goal), target_active_params=count_active_parameters(c, goal)
    )
    resolved = resolve_target_params(c, config)
    assert (getattr(resolved, experts_key), getattr(resolved, width_key)) == (3, 16)
    assert resolved.target_params is None and resolved.target_active_params is None
    prune_model(model, config, _manual_scores(model))
    assert sum(p.numel() for p in model.parameters()) == config.target_params
    assert count_active_parameters(model.config) == config.target_active_params
    with pytest.raises(ValueError, match="target_active_params=1 is below .* allowed"):
        resolve_target_params(c, PruningConfig(target_active_params=1))


def test_a_routed_expert_with_zero_output_ranks_last_under_reap_only():
    """REAP weighs routing by what the expert writes: routed but silent scores 0; frequency still counts it."""
    model = tiny_model("qwen3_moe")
    with torch.no_grad():
        for _, block in _sparse(model):
            block.experts.down_proj[DEAD_EXPERT] = 0
    scores = {
        c: estimate_importance(
            model,
            random_batches(),
            PruningConfig(num_experts=3, importance="activation", expert_importance=c),
        ).experts[[0, 2, 3]]
        for c in ("reap", "frequency")
    }
    assert (scores["reap"][:, DEAD_EXPERT] == 0).all() and (scores["reap"].sum(1) > 0).all()
    assert (scores["reap"].argmin(1) == DEAD_EXPERT).all()
    assert (scores["frequency"][:, DEAD_EXPERT] > 0).any()


def test_active_budget_of_a_dense_model_is_its_total_budget():
    c = tiny_model("llama").config
    target = count_parameters(c, {"intermediate_size": 64})
    active = resolve_target_params(c, PruningConfig(target_active_params=target))
    assert active == resolve_target_params(c, PruningConfig(target_params=target))
    with pytest.raises(ValueError, match="target_active_params=.* allowed None or the same value"):
        resolve_target_params(c, PruningConfig(target_params=target, target_active_params=target - 1))


def _manual_scores(model, seed=0) -> ImportanceScores:
    g = torch.Generator().manual_seed(seed)
    spec = get_spec(model)
    shape = spec.shape(model.config)
    n = shape["num_hidden_layers"]
    tensors = {
        grp.name: torch.rand(n, *unit_shape(grp, shape), generator=g)
        if grp.scope == "layer"
        else torch.rand(*unit_shape(grp, shape), generator=g)
        for grp in spec.groups
    }
    return ImportanceScores(**tensors, layers=torch.rand(n, generator=g), metadata={})


@pytest.mark.parametrize("arch", MOE)
def test_heads_hidden_size_and_depth_prune_on_moe_families(arch, tmp_path):
    """Every axis at once on random scores: the config alone rebuilds the shape, and it reloads and generates."""
    model = tiny_model(arch)
    experts_key, width_key = _keys(model)
    sizes = {experts_key: 3, width_key: 16, "num_key_value_heads": 2, "hidden_size": 48}
    if get_spec(model).heads_span_hidden:  # OLMoE: q_norm spans the hidden size
        sizes.update(hidden_size=32, num_attention_heads=4)
    extra = {
        k: 24
        for k in ("shared_expert_intermediate_size", "shared_intermediate_size")
        if hasattr(model.config, k)
    }
    prune_model(model, PruningConfig(layers_to_drop=[2], **sizes, **extra), _manual_scores(model))
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    batch = random_batches(n=1)[0]
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(_logits(reloaded, batch), _logits(model, batch), atol=1e-5, rtol=1e-5)
    reloaded.generate(torch.tensor([[3, 4, 5]]), max_new_tokens=3, do_sample=False)


DEAD_CHANNELS = torch.arange(0, 64, 4)


# OLMoE's q_norm is hidden-size wide (zero_channels would zero it); Llama4ForCausalLM.get_decoder() is not its
# decoder in transformers 5.x (zero_channels finds no final norm)
@pytest.mark.parametrize(
    "arch", ["glm4_moe", "gpt_oss", "granitemoe", "granitemoeshared", "mixtral", "qwen2_moe", "qwen3_moe"]
)
def test_dead_channels_through_experts_prune_exactly(arch):
    """Channels that no expert, router, shared expert or projection reads or writes rank last, and cutting them
    keeps the logits (the expert tensors are sliced along the hidden size)."""
    model = tiny_model(arch, rms_norm_eps=1e-12)
    zero_channels(model, DEAD_CHANNELS)
    with torch.no_grad():
        for _, block in _sparse(model):
            e = block.experts
            h_in, h_out = (1, 2) if e.is_transposed else (2, 1)
            e.gate_up_proj.index_fill_(h_in, DEAD_CHANNELS, 0)
            e.down_proj.index_fill_(h_out, DEAD_CHANNELS, 0)
            if getattr(e, "down_proj_bias", None) is not None:
                e.down_proj_bias[:, DEAD_CHANNELS] = 0
            _router(block).weight[:, DEAD_CHANNELS] = 0
            if hasattr(block, "shared_expert_gate"):
                block.shared_expert_gate.weight[:, DEAD_CHANNELS] = 0
        for layer in model.model.layers:  # Granite's shared MLP writes through output_linear
            if getattr(layer, "shared_mlp", None) is not None:
                layer.shared_mlp.output_linear.weight[DEAD_CHANNELS] = 0
    batch = random_batches(n=1, seed=1)[0]
    before = _logits(model, batch)
    target = PruningConfig(hidden_size=48, importance="activation", rescale_norms=True)  # RMS gains follow
    scores = estimate_importance(model, random_batches(), target)
    dead = torch.zeros(64, dtype=torch.bool)
    dead[DEAD_CHANNELS] = True
    assert scores.channels[dead].max() <= 1e-6 * scores.channels[~dead].min()
    prune_model(model, target, scores)
    torch.testing.assert_close(_logits(model, batch), before, atol=1e-4, rtol=1e-4)


def test_reap_and_neuron_statistics_match_a_per_token_reference():
    """REAP's saliency, routing frequency and expert-neuron activations against a plain loop over tokens."""
    model = tiny_model("mixtral")
    batches = random_batches(n=2, pad_last=5)
    block = model.model.layers[1].mlp
    inputs = []
    handle = block.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    with torch.no_grad():
        for b in batches:
            model(**b)
    handle.remove()
    e = block.experts
    n_experts, width = e.gate_up_proj.shape[0], e.down_proj.shape[2]
    saliency, count = torch.zeros(n_experts), torch.zeros(n_experts)
    act = torch.zeros(n_experts, width)
    tokens = 0
    with torch.no_grad():
        for x, b in zip(inputs, batches):
            flat, mask = x.reshape(-1, x.shape[-1]), b["attention_mask"].reshape(-1)
            _, weights, index = block.gate(flat)
            for t in range(flat.shape[0]):
                if not mask[t]:
                    continue
                tokens += 1
                for g, j in zip(weights[t].tolist(), index[t].tolist()):
                    gate, up = (e.gate_up_proj[j] @ flat[t]).chunk(2)
                    a = torch.nn.functional.silu(gate) * up
                    saliency[j] += g * torch.linalg.vector_norm(e.down_proj[j] @ a)
                    count[j] += 1
                    act[j] += a.abs()
    for criterion, expected in (("reap", saliency / count.clamp_min(1)), ("frequency", count / tokens)):
        config = PruningConfig(num_local_experts=3, intermediate_size=16, importance="activation")
        config.expert_importance = criterion
        scores = estimate_importance(model, batches, config)
        torch.testing.assert_close(scores.experts[1], expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        scores.expert_neurons[1], act / count.clamp_min(1).unsqueeze(1), atol=1e-5, rtol=1e-4
    )


def test_saved_checkpoint_has_the_layout_transformers_writes(pruned, tmp_path):
    """Key names and shapes on disk equal those of a fresh model of the pruned config saved by transformers."""
    from safetensors import safe_open

    def layout(path):
        with safe_open(str(path / "model.safetensors"), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}

    for arch in MOE:
        model, *_, path = pruned[arch]
        reference = tmp_path / arch
        AutoModelForCausalLM.from_config(model.config).save_pretrained(reference)
        assert layout(path) == layout(reference), arch


def test_expert_statistics_under_an_accelerate_dispatch_hook():
    """A module wrapped by accelerate keeps its hook: the statistics replace the computation it wraps."""
    from accelerate.hooks import ModelHook, add_hook_to_module

    class Count(ModelHook):
        calls = 0

        def pre_forward(self, module, *args, **kwargs):
            Count.calls += 1
            return args, kwargs

    model = tiny_model("mixtral")
    batch = random_batches(n=1)[0]
    before = _logits(model, batch)
    experts = [block.experts for _, block in _sparse(model)]
    for module in experts:
        add_hook_to_module(module, Count())
    wrapped = [module.forward for module in experts]
    scores = estimate_importance(model, [batch], PruningConfig(num_local_experts=3, importance="activation"))
    assert Count.calls == len(experts) and (scores.experts.sum(1) > 0).all()
    assert [module.forward for module in experts] == wrapped  # accelerate's wrapper is still in place
    torch.testing.assert_close(_logits(model, batch), before, atol=0, rtol=0)
    assert Count.calls == 2 * len(experts)
