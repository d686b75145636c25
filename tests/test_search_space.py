"""Search space: exact parameter counts, costs, enumeration rules, budget errors, the practical shape."""

from __future__ import annotations

import pytest
import torch
from tiny_models import ARCHITECTURES, model_class, tiny_config
from transformers import AutoConfig, AutoModelForCausalLM

from hf_minitron.config import PruningConfig
from hf_minitron.counting import shape_of
from hf_minitron.pruning.budget import accepted
from hf_minitron.search import (
    count_parameters,
    effective_multiple,
    enumerate_candidates,
    flops_per_token,
    kv_cache_bytes_per_token,
    resolve_target_params,
)
from hf_minitron.search.cost import cost_model, pruned_config

SHAPES = [
    {},
    dict(
        hidden_size=32,
        intermediate_size=48,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=3,
    ),
    dict(
        hidden_size=16,
        intermediate_size=16,
        num_attention_heads=4,
        num_key_value_heads=4,
        num_hidden_layers=1,
    ),
]


def _real_count(config) -> int:
    """Independent reference: a real model on the CPU, unique parameters."""
    model = model_class(config).from_config(config)
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


@pytest.mark.parametrize("model_type", ARCHITECTURES)
def test_count_parameters_matches_real_model(model_type):
    config = tiny_config(model_type)
    model_cost = cost_model(config)
    for shape in SHAPES:
        expected = _real_count(pruned_config(config, shape))
        assert count_parameters(config, shape) == expected
        if not accepted(config, shape):  # e.g. Helium's hidden-wide attention at hidden 16 with 4 heads of 8
            continue
        closed_form = model_cost.params({**shape_of(config), **shape})
        assert round(closed_form) == expected


def test_tied_embeddings_counted_once():
    tied = tiny_config("qwen2", tie_word_embeddings=True)
    untied = tiny_config("qwen2", tie_word_embeddings=False)
    assert count_parameters(untied) - count_parameters(tied) == tied.vocab_size * tied.hidden_size


def test_inference_costs_follow_their_definitions():
    config = tiny_config("llama")
    linear = sum(
        m.weight.numel()
        for m in AutoModelForCausalLM.from_config(config).modules()
        if isinstance(m, torch.nn.Linear)
    )
    assert flops_per_token(config, seq_len=32) == 2 * linear + 4 * 8 * 8 * 32 * 4
    assert kv_cache_bytes_per_token(config, seq_len=32) == 2 * 4 * 8 * 2 * 4
    # Gemma2 alternates sliding (window 16) and full layers: sliding layers cost window / seq_len per token.
    gemma2 = tiny_config("gemma2")
    assert kv_cache_bytes_per_token(gemma2, seq_len=64) == 2 * 4 * 8 * 2 * (2 + 2 * 16 / 64)


def test_effective_multiple():
    assert effective_multiple(4096, 64) == 64
    assert effective_multiple(64, 64) == 8
    assert effective_multiple(128, 64) == 16
    assert effective_multiple(4096, 256) == 256


@pytest.mark.parametrize("model_type", ["llama", "qwen3", "nemotron"])
def test_enumeration_respects_budget_and_divisibility(model_type):
    config = tiny_config(model_type)
    target = count_parameters(config) // 2
    candidates = enumerate_candidates(config, target, max_candidates=12, seq_len=64)
    assert 1 <= len(candidates) <= 12
    assert len({c.name for c in candidates}) == len(candidates)
    for c in candidates:
        assert abs(c.params - target) <= 0.05 * target
        assert c.params == _real_count(pruned_config(config, c.shape))
        assert c.hidden_size % 8 == 0 and c.intermediate_size % 16 == 0
        assert c.num_attention_heads % c.num_key_value_heads == 0
        assert c.num_key_value_heads == config.num_key_value_heads  # KV groups kept by default
        assert 1 <= c.num_hidden_layers <= config.num_hidden_layers
        c.to_pruning_config().validate_for(config)
    assert {"width", "mixed"} <= {c.family for c in candidates}


def test_enumeration_families_and_multiple():
    config = AutoConfig.for_model(
        "llama",
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=2816,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    target = int(count_parameters(config) * 0.6)
    candidates = enumerate_candidates(config, target, max_candidates=9, width_multiple=64)
    families = [c.family for c in candidates]
    assert set(families) == {"width", "depth", "mixed"}
    for c in candidates:
        assert c.hidden_size % 64 == 0 and c.intermediate_size % 64 == 0
        if c.family == "depth":
            assert (c.hidden_size, c.intermediate_size, c.num_attention_heads) == (1024, 2816, 16)
        if c.family == "width":
            assert c.num_hidden_layers == 16
    # Minitron's practical shape (common factor, heads and layers kept) is always the first width candidate.
    practical = resolve_target_params(config, PruningConfig(target_params=target))
    first = candidates[0]
    assert (first.hidden_size, first.intermediate_size) == (
        practical.hidden_size,
        practical.intermediate_size,
    )
    only_depth = enumerate_candidates(config, target, families=("depth",), tolerance=0.1)
    assert only_depth and all(c.family == "depth" for c in only_depth)


def test_enumeration_is_deterministic_for_a_seed():
    config = tiny_config("llama")
    target = count_parameters(config) // 2
    runs = [enumerate_candidates(config, target, max_candidates=6, seed=s) for s in (3, 3)]
    assert [c.name for c in runs[0]] == [c.name for c in runs[1]]


def test_impossible_budgets_are_refused():
    config = tiny_config("llama")
    embeddings = 2 * config.vocab_size * config.hidden_size
    with pytest.raises(ValueError, match="target_params=.*below the smallest shape"):
        enumerate_candidates(config, embeddings // 100)
    with pytest.raises(ValueError, match="target_params=.*larger than the model"):
        enumerate_candidates(config, 2 * count_parameters(config))
    with pytest.raises(ValueError, match="target_params=.*larger than the model"):
        resolve_target_params(config, PruningConfig(target_params=2 * count_parameters(config)))
    with pytest.raises(ValueError, match="below the smallest shape"):
        resolve_target_params(config, PruningConfig(target_params=1000))
    with pytest.raises(ValueError, match="needs a budget"):
        enumerate_candidates(config)
    with pytest.raises(ValueError, match="tolerance"):
        enumerate_candidates(config, 80_000, tolerance=1.5)


def test_cost_budgets():
    config = tiny_config("llama")
    kv_target = kv_cache_bytes_per_token(config, 64) / 2
    candidates = enumerate_candidates(
        config, target_kv_cache_bytes_per_token=kv_target, seq_len=64, max_candidates=8
    )
    assert candidates
    for c in candidates:
        assert abs(c.kv_cache_bytes_per_token - kv_target) <= 0.05 * kv_target
    flops_target = flops_per_token(config, 64) * 0.6
    for c in enumerate_candidates(config, target_flops_per_token=flops_target, seq_len=64, max_candidates=8):
        assert abs(c.flops_per_token - flops_target) <= 0.05 * flops_target + 1


def test_resolve_target_params_practical_shape():
    config = tiny_config("llama")
    target = count_parameters(config) // 2
    resolved = resolve_target_params(config, PruningConfig(target_params=target, importance="taylor"))
    assert resolved.target_params is None and resolved.importance == "taylor"
    assert resolved.num_attention_heads is None and resolved.num_hidden_layers is None
    ratio_h = resolved.hidden_size / config.hidden_size
    ratio_i = resolved.intermediate_size / config.intermediate_size
    assert abs(ratio_h - ratio_i) <= 0.15
    shape = dict(hidden_size=resolved.hidden_size, intermediate_size=resolved.intermediate_size)
    assert abs(count_parameters(config, shape) - target) <= 0.05 * target
    # Sizes the config fixes are kept; the others are solved for.
    fixed = resolve_target_params(config, PruningConfig(target_params=target, num_hidden_layers=3))
    assert fixed.num_hidden_layers == 3 and fixed.hidden_size > resolved.hidden_size
    # Without a budget the config is returned unchanged.
    plain = PruningConfig(hidden_size=32)
    assert resolve_target_params(config, plain) is plain


def test_every_candidate_is_a_shape_the_config_class_accepts():
    """Llama refuses hidden % heads != 0: with 9 heads most widths are invalid, and none is proposed."""
    config = tiny_config(
        "llama", hidden_size=72, num_attention_heads=9, num_key_value_heads=3, intermediate_size=144
    )
    target = int(0.6 * count_parameters(config))
    candidates = enumerate_candidates(config, target, tolerance=0.1, max_candidates=12)
    assert candidates
    for c in candidates:
        pruned = pruned_config(config, c.shape)
        type(pruned).from_dict(pruned.to_dict())  # raises for a refused shape
        assert c.hidden_size % c.num_attention_heads == 0
        assert count_parameters(config, c.shape) == c.params
    resolved = resolve_target_params(config, PruningConfig(target_params=target))
    assert resolved.hidden_size % 9 == 0
