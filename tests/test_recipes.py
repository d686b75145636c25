"""Every recipe loads, uses only dataclass fields, and its targets fit the source architecture (numbers written
here from the published configs; nothing is downloaded) and give the published Minitron shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hf_minitron.cli.arguments import SECTIONS, field_names, load_recipe, resolve_recipe_path
from hf_minitron.config import PruningConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

# Source architectures (config.json of the Hub checkpoints; Nemotron-4 15B from the Minitron paper).
LLAMA_31_8B = dict(model_type="llama", vocab_size=128256, hidden_size=4096, intermediate_size=14336,
                   num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                   tie_word_embeddings=False)  # fmt: skip
MISTRAL_NEMO_12B = dict(model_type="mistral", vocab_size=131072, hidden_size=5120, intermediate_size=14336,
                        num_hidden_layers=40, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                        tie_word_embeddings=False)  # fmt: skip
NEMOTRON_4_15B = dict(model_type="nemotron", vocab_size=256000, hidden_size=6144, intermediate_size=24576,
                      num_hidden_layers=32, num_attention_heads=48, num_key_value_heads=8, head_dim=128,
                      tie_word_embeddings=False)  # fmt: skip

# Mixture-of-experts sources (transformers' config defaults name these checkpoints; Qwen3-30B-A3B's config.json has
# 48 layers and head_dim 128).
QWEN3_30B_A3B = dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                     num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                     moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                     tie_word_embeddings=False)  # fmt: skip
MIXTRAL_8X7B = dict(model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
                    num_experts_per_tok=2, tie_word_embeddings=False)  # fmt: skip

# MoE recipe -> (source, its published (total, active) parameters in billions, the pruned sizes, the pruned
# (total, active) in billions): NVIDIA ModelOpt's table for Qwen3-30B-A3B (Model-Optimizer pull 467); Mistral's
# announced 46.7B / 12.9B for Mixtral-8x7B, its 6-expert counts computed here.
MOE_PUBLISHED = {
    "qwen3-30b-a3b-to-96-experts": (QWEN3_30B_A3B, (30.5, 3.4), {"num_experts": 96}, (23.3, 3.3)),
    "qwen3-30b-a3b-experts-width-512": (
        QWEN3_30B_A3B,
        (30.5, 3.4),
        {"moe_intermediate_size": 512},
        (20.9, 2.7),
    ),
    "mixtral-8x7b-to-6-experts": (MIXTRAL_8X7B, (46.7, 12.9), {"num_local_experts": 6}, (35.4, 12.9)),
}

# recipe -> (source, published result: layers, hidden, heads, KV heads, MLP; approximate parameters in billions)
PUBLISHED = {
    "mistral-nemo-12b-to-8b-width": (MISTRAL_NEMO_12B, (40, 4096, 32, 8, 11520), 8.4),
    "llama-3.1-8b-to-4b-width": (LLAMA_31_8B, (32, 3072, 32, 8, 9216), 4.5),
    "llama-3.1-8b-to-4b-depth": (LLAMA_31_8B, (16, 4096, 32, 8, 14336), 4.5),
    "nemotron-4-15b-to-8b": (NEMOTRON_4_15B, (32, 4096, 48, 8, 16384), 8.3),
    "nemotron-4-15b-to-4b": (NEMOTRON_4_15B, (32, 3072, 24, 8, 9216), 4.2),
}


def _source_config(arch: dict):
    arch = dict(arch)
    return AutoConfig.for_model(arch.pop("model_type"), **arch)


def _pruned_shape(source, pruning: PruningConfig) -> tuple[int, ...]:
    sizes = pruning.target_sizes(source)
    new_q, new_kv = sizes["num_attention_heads"], sizes["num_key_value_heads"]
    layers = source.num_hidden_layers
    if pruning.layers_to_drop is not None:
        layers -= len(pruning.layers_to_drop)
    elif pruning.num_hidden_layers is not None:
        layers = pruning.num_hidden_layers
    return (
        layers,
        pruning.hidden_size or source.hidden_size,
        new_q,
        new_kv,
        pruning.intermediate_size or source.intermediate_size,
    )


def _parameters(config) -> int:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def test_every_recipe_is_covered():
    names = {p.stem for p in RECIPES.glob("*.yaml")}
    assert names == set(PUBLISHED) | set(MOE_PUBLISHED) | set(HYBRID_PUBLISHED) | {
        "quickstart",
        "quickstart-smoke",
    }


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES.glob("*.yaml")))
def test_recipe_keys_are_dataclass_fields(name):
    import yaml

    raw = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    recipe = load_recipe(name)  # raises on an unknown section or key
    assert set(raw) == set(recipe) and set(raw) <= set(SECTIONS)
    for section, values in recipe.items():
        assert set(values) <= field_names(SECTIONS[section]()), section
    PruningConfig(**recipe["pruning"]).validate()
    assert (
        "#" in (RECIPES / f"{name}.yaml").read_text().splitlines()[0]
    )  # starts with a comment on what it made


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_targets_fit_the_source_and_give_the_published_shape(name):
    source_arch, published, billions = PUBLISHED[name]
    recipe = load_recipe(name)
    source = _source_config(source_arch)
    pruning = PruningConfig(**recipe["pruning"])
    pruning.validate_for(source)
    assert _pruned_shape(source, pruning) == published
    layers, hidden, heads, kv, mlp = published
    pruned = _source_config({**source_arch, "num_hidden_layers": layers, "hidden_size": hidden,
                             "num_attention_heads": heads, "num_key_value_heads": kv, "intermediate_size": mlp})  # fmt: skip
    assert _parameters(pruned) / 1e9 == pytest.approx(billions, abs=0.1)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_recipe_distillation_settings_build_distillation_arguments(name, tmp_path):
    from hf_minitron import DistillationArguments

    values = dict(load_recipe(name)["distillation"])
    assert values["distill_loss"] == "forward_kl" and values["distill_temperature"] == 1.0
    assert values["learning_rate"] == 1e-4  # both papers' peak LR
    values.pop("bf16", None)  # needs an accelerator here
    args = DistillationArguments(output_dir=str(tmp_path), use_cpu=True, **values)
    tokens = args.max_steps * args.gradient_accumulation_steps * load_recipe(name)["data"]["seq_len"]
    assert tokens / 1e9 == pytest.approx(380 if "mistral" in name else 94, rel=0.01)


def _moe_parameters(config) -> tuple[int, int]:
    """(total, active) parameters of a MoE config, from a meta model: a token runs top-k of the E routed experts."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    routed = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    n_experts = getattr(config, "num_experts", None) or config.num_local_experts
    return total, total - routed + routed * config.num_experts_per_tok // n_experts


@pytest.mark.parametrize("name", sorted(MOE_PUBLISHED))
def test_moe_recipe_targets_fit_the_source_and_give_the_published_counts(name, tmp_path):
    from hf_minitron import DistillationArguments

    source_arch, source_billions, sizes, billions = MOE_PUBLISHED[name]
    recipe = load_recipe(name)
    source = _source_config(source_arch)
    pruning = PruningConfig(**recipe["pruning"])
    pruning.validate_for(source)
    assert {k: v for k, v in pruning.target_sizes(source).items() if source_arch.get(k) != v} == sizes
    total, active = _moe_parameters(source)
    assert (round(total / 1e9, 1), round(active / 1e9, 1)) == source_billions
    total, active = _moe_parameters(_source_config({**source_arch, **sizes}))
    assert (round(total / 1e9, 1), round(active / 1e9, 1)) == billions
    values = dict(recipe["distillation"])
    assert values["distill_loss"] == "forward_kl" and values["learning_rate"] == 1e-4
    values.pop("bf16", None)  # needs an accelerator here
    DistillationArguments(output_dir=str(tmp_path), use_cpu=True, **values)


def test_depth_recipe_uses_the_contiguous_metric():
    pruning = load_recipe("llama-3.1-8b-to-4b-depth")["pruning"]
    assert pruning == {"num_hidden_layers": 16, "depth_metric": "contiguous"}


@pytest.mark.parametrize("name", ["quickstart", "quickstart-smoke"])
def test_quickstart_recipes_fit_their_teacher_and_halve_it(name):
    from hf_minitron.quickstart import QuickstartArguments

    recipe = load_recipe(name)
    q = QuickstartArguments(**recipe["quickstart"])
    teacher = _source_config(dict(
        model_type="llama", vocab_size=q.vocab_size, hidden_size=q.teacher_hidden_size,
        intermediate_size=q.teacher_intermediate_size, num_hidden_layers=q.teacher_num_hidden_layers,
        num_attention_heads=q.teacher_num_attention_heads, num_key_value_heads=q.teacher_num_key_value_heads,
        tie_word_embeddings=False,
    ))  # fmt: skip
    pruning = PruningConfig(**recipe["pruning"])
    pruning.validate_for(teacher)
    layers, hidden, heads, kv, mlp = _pruned_shape(teacher, pruning)
    pruned = _source_config(dict(
        model_type="llama", vocab_size=q.vocab_size, hidden_size=hidden, intermediate_size=mlp,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv, tie_word_embeddings=False,
        head_dim=teacher.hidden_size // teacher.num_attention_heads,
    ))  # fmt: skip
    ratio = _parameters(pruned) / _parameters(teacher)
    assert 0.4 <= ratio <= 0.6, ratio


def test_shipped_recipe_names_resolve(tmp_path):
    assert resolve_recipe_path("llama-3.1-8b-to-4b-width").name == "llama-3.1-8b-to-4b-width.yaml"
    with pytest.raises(FileNotFoundError):
        resolve_recipe_path("no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("pruning:\n  hidden_sise: 3\n")
    with pytest.raises(ValueError, match="hidden_sise"):
        load_recipe(bad)


# ------------------------------------------------- Mamba-2 hybrids (NVIDIA Megatron-Bridge's model providers)
NEMOTRON_H_8B_PATTERN = "M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M*-M-M-M-M-M-"
NANO_12B_PATTERN = "M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M*-M-M-M-M-"
NANO_9B_PATTERN = "M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-"
NEMOTRON_H_8B = dict(model_type="nemotron_h", vocab_size=131072, hybrid_override_pattern=NEMOTRON_H_8B_PATTERN,
                     hidden_size=4096, intermediate_size=21504, num_attention_heads=32, num_key_value_heads=8,
                     head_dim=128, mamba_num_heads=128, mamba_head_dim=64, n_groups=8, ssm_state_size=128,
                     tie_word_embeddings=False)  # fmt: skip
NANO_12B_V2 = dict(NEMOTRON_H_8B, hybrid_override_pattern=NANO_12B_PATTERN, hidden_size=5120,
                   intermediate_size=20480, num_attention_heads=40, mamba_head_dim=80)  # fmt: skip

# recipe -> (source, published sizes, published pattern, exact parameters of that shape, distillation tokens (B))
HYBRID_PUBLISHED = {
    "nemotron-h-8b-to-4b": (
        NEMOTRON_H_8B,
        dict(hidden_size=3072, intermediate_size=12288, mamba_num_heads=112, num_attention_heads=32),
        NEMOTRON_H_8B_PATTERN,
        4_489_223_040,
        380,
    ),
    "nemotron-nano-12b-v2-to-9b": (
        NANO_12B_V2,
        dict(hidden_size=4480, intermediate_size=15680, mamba_num_heads=128, num_attention_heads=40),
        NANO_9B_PATTERN,
        8_888_227_328,
        94,
    ),
}


@pytest.mark.parametrize("name", sorted(HYBRID_PUBLISHED))
def test_hybrid_recipe_targets_fit_the_source_and_give_the_published_shape(name):
    """The targets validate against the source config, keep n_groups, and give the published widths; the published
    shape (with its own layer pattern) has the parameter count quoted in the recipe."""
    from hf_minitron.architectures import get_spec

    source_arch, published, pattern, params, _ = HYBRID_PUBLISHED[name]
    recipe = load_recipe(name)
    source = _source_config(source_arch)
    pruning = PruningConfig(**recipe["pruning"])
    pruning.validate_for(source)
    sizes = pruning.target_sizes(source)
    get_spec(source).check_sizes(source, sizes)
    assert {k: sizes[k] for k in published} == published and sizes["n_groups"] == 8
    assert (pruning.num_hidden_layers or source.num_hidden_layers) == len(pattern)
    pruned = _source_config({**source_arch, **published, "hybrid_override_pattern": pattern})
    assert _parameters(pruned) == params
    assert f"{params:,}" in (RECIPES / f"{name}.yaml").read_text()


@pytest.mark.parametrize("name", sorted(HYBRID_PUBLISHED))
def test_hybrid_recipe_distillation_settings_build_distillation_arguments(name, tmp_path):
    from hf_minitron import DistillationArguments

    values = dict(load_recipe(name)["distillation"])
    assert values["distill_loss"] == "forward_kl" and values["distill_temperature"] == 1.0
    values.pop("bf16", None)  # needs an accelerator here
    args = DistillationArguments(output_dir=str(tmp_path), use_cpu=True, **values)
    tokens = args.max_steps * args.gradient_accumulation_steps * load_recipe(name)["data"]["seq_len"]
    assert tokens / 1e9 == pytest.approx(HYBRID_PUBLISHED[name][-1], rel=0.01)
