"""Search and budgets on models whose layers differ: mixture-of-experts (dense and sparse layers, experts and
expert width as axes) and hybrids (Mamba, attention and MLP layers). Counts are checked against models built
from the pruned config and against real pruning."""

from __future__ import annotations

import random

import pytest
import torch
from tiny_models import HYBRID, MOE, random_batches, tiny_config, tiny_model

from hf_minitron import PruningConfig, estimate_importance, prune_model
from hf_minitron.architectures import get_spec
from hf_minitron.counting import (
    CostModel,
    count_active_parameters,
    count_parameters,
    flops_per_token,
    kv_cache_bytes_per_token,
    shape_of,
)
from hf_minitron.pruning.budget import accepted, resolve_target_params
from hf_minitron.search import enumerate_candidates, search_architectures


def _random_shape(config, rng: random.Random) -> dict[str, int]:
    """A shape the config class accepts: every group at a random size (GQA ratios kept, fixed keys kept)."""
    spec, base = get_spec(config), shape_of(config)
    text = config.get_text_config()
    for _ in range(200):
        shape = {}
        for g in spec.groups:
            if g.selection == "gqa":
                q, kv = g.config_keys
                n_kv = base[kv] if kv in spec.fixed_keys else rng.randint(1, base[kv])
                shape[kv], shape[q] = n_kv, n_kv * rng.randint(1, base[q] // base[kv])
            else:
                low = int(getattr(text, g.lower_bound)) if g.lower_bound else 1
                for k in g.config_keys:
                    shape[k] = base[k] if k in spec.fixed_keys else rng.randint(low, base[k])
        if spec.inner_width_tie:  # Mamba width tied to the hidden size: heads follow it in proportion
            heads, size, expand = spec.inner_width_tie
            shape["hidden_size"] = base["hidden_size"] // 2
            shape[heads] = expand_heads = getattr(text, expand) * shape["hidden_size"] // getattr(text, size)
            assert expand_heads
        if accepted(config, shape):
            return shape
    raise AssertionError("no accepted random shape")


@pytest.mark.parametrize("arch", MOE + HYBRID)
def test_cost_model_is_exact_for_layers_that_differ(arch):
    """Params, active params, FLOPs and KV cache from the closed form equal the counts of the model built from
    the pruned config, for random shapes and random kept layers."""
    config = tiny_config(arch)
    model = CostModel(config)
    n_layers = config.get_text_config().num_hidden_layers
    rng = random.Random(arch)
    for _ in range(4):
        shape = _random_shape(config, rng)
        depth = rng.randint(1, n_layers)
        kept = sorted(rng.sample(range(n_layers), depth))
        shape["num_hidden_layers"] = depth
        chosen = lambda n, kept=kept, depth=depth: kept if n == depth else range(n)  # noqa: E731
        assert round(model.params(shape, chosen)) == count_parameters(config, shape, kept)
        assert round(model.active_params(shape, chosen)) == count_active_parameters(config, shape, kept)
        assert round(model.flops(shape, 64, chosen)) == flops_per_token(config, 64, shape, kept)
        assert model.kv_bytes(shape, 64, kept=chosen) == pytest.approx(
            kv_cache_bytes_per_token(config, 64, shape=shape, kept_layers=kept)
        )


def test_layers_that_differ_are_told_apart():
    """Qwen3-MoE with one dense layer and a Nemotron-H pattern have several layer costs; Mixtral one."""
    assert CostModel(tiny_config("qwen3_moe")).layers_differ
    assert CostModel(tiny_config("nemotron_h")).layers_differ
    assert not CostModel(tiny_config("mixtral")).layers_differ


def test_hybrid_kv_cache_counts_only_attention_layers():
    """A Mamba or MLP layer keeps no per-token cache: 2 x KV heads x head_dim x 2 bytes per attention layer."""
    config = tiny_config("nemotron_h")
    attention = sum(kind == "full_attention" for kind in config.layers_block_type)
    expected = attention * 2 * config.num_key_value_heads * config.head_dim * 2
    assert kv_cache_bytes_per_token(config, 64) == expected


def test_moe_search_space_has_experts_and_expert_width_within_the_active_budget():
    """target_active_params: every candidate touches that many parameters per token (exact counts), experts
    never drop below the experts each token uses, and the choice varies the expert count and width."""
    config = tiny_config("qwen3_moe")
    target = int(0.7 * count_active_parameters(config))
    candidates = enumerate_candidates(config, target_active_params=target, tolerance=0.05, max_candidates=12)
    assert candidates
    for c in candidates:
        assert abs(count_active_parameters(config, c.sizes, _kept(c, config)) - target) <= 0.05 * target
        assert c.active_params == count_active_parameters(config, c.sizes, _kept(c, config))
        assert c.num_experts >= config.num_experts_per_tok
    assert (
        len({c.num_experts for c in candidates}) > 1 or len({c.moe_intermediate_size for c in candidates}) > 1
    )


def _kept(candidate, config) -> list[int] | None:
    n = config.get_text_config().num_hidden_layers
    if candidate.layers_to_drop is None:
        return None
    return [i for i in range(n) if i not in candidate.layers_to_drop]


@pytest.mark.parametrize("arch", ["nemotron_h", "qwen3_moe"])
def test_pruning_a_shallower_candidate_gives_its_exact_count(arch):
    """When layers differ, a depth candidate names the layers it drops, so the pruned model has exactly the
    candidate's parameter count (whatever the kinds of the dropped layers)."""
    model = tiny_model(arch)
    batches = random_batches(n=2, vocab_size=model.config.vocab_size)
    target = int(0.75 * count_parameters(model.config))
    scores = estimate_importance(model, batches, PruningConfig(target_params=target))
    from hf_minitron.search.run import _kept_by_scores

    candidates = enumerate_candidates(
        model.config,
        target,
        families=("depth", "mixed"),
        max_candidates=4,
        tolerance=0.1,
        kept=_kept_by_scores(scores),
    )
    assert candidates
    for c in candidates:
        assert (
            c.layers_to_drop is not None
            and len(c.layers_to_drop) == shape_of(model.config)["num_hidden_layers"] - c.num_hidden_layers
        )
        pruned = prune_model(tiny_model(arch), c.to_pruning_config(), scores)
        assert sum(p.numel() for p in pruned.parameters()) == c.params
        # the scores chose these layers: the lowest-scored ones are the dropped ones
        dropped = torch.tensor(c.layers_to_drop)
        kept = torch.tensor([i for i in range(len(scores.layers)) if i not in c.layers_to_drop])
        assert scores.layers[dropped].max() <= scores.layers[kept].min()


DENSE_NEMOTRON_H = ["linear_attention", "full_attention", "mlp", "linear_attention", "mlp", "full_attention"]


def test_hybrid_parameter_budget_resolves_to_the_practical_shape():
    """target_params on a hybrid without experts: hidden and MLP widths shrink by a common factor, to a budget met
    exactly when a common-factor shape has it (here hidden 48 and MLP 96 of 64 and 128)."""
    model = tiny_model("nemotron_h", layers_block_type=DENSE_NEMOTRON_H)
    target = count_parameters(model.config, {"hidden_size": 48, "intermediate_size": 96})
    config = PruningConfig(target_params=target)
    batches = random_batches(n=2, vocab_size=model.config.vocab_size)
    pruned = prune_model(model, config, estimate_importance(model, batches, config))
    assert sum(p.numel() for p in pruned.parameters()) == target
    assert (pruned.config.hidden_size, pruned.config.intermediate_size) == (48, 96)


def test_hybrid_moe_expert_budget_keeps_whole_routing_groups():
    """Nemotron 3 Nano-style MoE blocks keep experts per routing group: a budget between 6 and 4 experts resolves
    to a multiple of n_group (2), never 5 or 7, and prunes to exactly that count."""
    model = tiny_model("nemotron_h")
    for target_experts in (5, 7):
        target = count_parameters(model.config, {"num_local_experts": target_experts})
        resolved = resolve_target_params(model.config, PruningConfig(target_params=target))
        assert resolved.num_local_experts % model.config.n_group == 0
        assert abs(resolved.num_local_experts - target_experts) == 1
    config = PruningConfig(target_params=count_parameters(model.config, {"num_local_experts": 6}))
    batches = random_batches(n=2, vocab_size=model.config.vocab_size)
    pruned = prune_model(model, config, estimate_importance(model, batches, config))
    assert pruned.config.num_local_experts == 6
    assert sum(p.numel() for p in pruned.parameters()) == config.target_params


@pytest.mark.parametrize("arch", ["mixtral", "nemotron_h"])
def test_search_ranks_moe_and_hybrid_candidates(arch, tmp_path):
    """The search runs end to end on layers that differ (ranked right after pruning here)."""
    model = tiny_model(arch)
    batches = random_batches(n=2, vocab_size=model.config.vocab_size)
    eval_rows = [{"input_ids": b["input_ids"][0]} for b in batches]
    target = int(0.7 * count_parameters(model.config))
    scores = estimate_importance(model, batches, PruningConfig(target_params=target))
    result = search_architectures(
        model, scores, target, eval_dataset=eval_rows, steps_per_candidate=0, max_candidates=3, tolerance=0.1
    )
    assert result.ranking and not result.failures
    table = result.to_markdown()
    assert all(k in table for k in shape_of(model.config))


def test_moe_architecture_summary_and_card_show_active_parameters():
    """A pruned MoE model's card lists the parameters a token touches next to the stored ones."""
    from hf_minitron.hub import architecture_summary, render_model_card

    before = tiny_model("mixtral")
    summary = architecture_summary(before)
    config = before.config
    assert summary["active_parameters"] == count_active_parameters(config) < summary["parameters"]
    config3 = PruningConfig(num_local_experts=3)
    after = tiny_model("mixtral")
    prune_model(after, config3, estimate_importance(after, random_batches(n=1), config3))
    record = {"architecture": {"before": summary, "after": architecture_summary(after)}}
    text = str(render_model_card(record))
    active_after = count_active_parameters(after.config)
    assert f"| active parameters | {summary['active_parameters']:,} | {active_after:,} |" in text
    assert "active_parameters" not in architecture_summary(tiny_model("llama"))
