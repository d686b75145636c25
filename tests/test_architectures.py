"""Every registered spec against the modules, tensor-parallel plan and numerics transformers actually has."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import ARCHITECTURES, tiny_config, tiny_model

from hf_minitron.architectures import get_spec, supported_model_types


def test_registry_covers_the_tiny_model_families():
    assert sorted(supported_model_types()) == sorted(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_spec_matches_module_names_and_tp_plan(arch):
    model = tiny_model(arch)
    spec = get_spec(model)
    assert spec is get_spec(model.config) is get_spec(arch)
    for path in spec.module_paths(model.config.num_hidden_layers):
        model.get_submodule(path)  # raises on an upstream rename
    assert isinstance(spec.layers(model), torch.nn.ModuleList)
    assert spec.layers_path.endswith("layers") and spec.lm_head(model) is model.get_output_embeddings()
    assert spec.embed(model) is model.get_input_embeddings()
    plan = dict(model.config.base_model_tp_plan or {})
    linear_plan = {k: v for k, v in plan.items() if v in ("colwise", "rowwise")}
    assert spec.tp_plan() == linear_plan
    norms_in_plan = {k.split(".*.")[1] for k in plan if v_is_norm(plan[k])}
    assert norms_in_plan <= set(spec.head_norms)
    mlp = spec.mlp_module(spec.layers(model)[0])
    assert hasattr(mlp, "gate_proj") == (spec.gate_proj is not None)


def v_is_norm(style: str) -> bool:
    return style.startswith("replicated")


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_spec_numerics_match_the_model(arch):
    model = tiny_model(arch)
    spec = get_spec(model)
    layer = spec.layers(model)[0]
    # every hidden-size module of the layer is covered by layer_norms (nothing left unsliced)
    hidden_norms = {
        name
        for name, m in layer.named_children()
        if getattr(m, "weight", None) is not None and tuple(m.weight.shape) == (model.config.hidden_size,)
    }
    assert hidden_norms == set(spec.layer_norms)
    # norm_weight_offset: with zero weight (and bias) a (1 + w) norm is the plain normalization
    norm = spec.final_norm(model)
    x = torch.randn(3, model.config.hidden_size)
    with torch.no_grad():
        norm.weight.zero_()
        if getattr(norm, "bias", None) is not None:
            norm.bias.zero_()
        out = norm(x)
    assert (out.abs().max() > 0.5) == (spec.norm_weight_offset == 1.0)
    # embed_scale_from_hidden_size: embedding output over raw rows is sqrt(hidden_size)
    ids = torch.tensor([[5]])
    with torch.no_grad():
        ratio = (spec.embed(model)(ids)[0, 0] / spec.embed(model).weight[5]).mean().item()
    expected = math.sqrt(model.config.hidden_size) if spec.embed_scale_from_hidden_size else 1.0
    assert ratio == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_config_fields_named_in_spec_exist(arch):
    config = tiny_config(arch)
    spec = get_spec(config)
    for name in spec.layer_prefix_count_fields:
        assert isinstance(getattr(config, name), int)
    for name in spec.head_norms:
        assert "norm" in name


def test_unsupported_type_lists_supported():
    with pytest.raises(ValueError, match=r"model_type='gpt2' is not supported: allowed one of \[.*'llama'"):
        get_spec("gpt2")
