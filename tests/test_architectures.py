"""Every registered spec against the parameters, modules and numerics transformers actually has."""

from __future__ import annotations

import ast
import math
import pathlib

import pytest
import torch
from tiny_models import ARCHITECTURES, HYBRID, MOE, tiny_config, tiny_model

import hf_minitron
from hf_minitron.architectures import get_spec, supported_model_types
from hf_minitron.architectures.dimensions import applies, expand, index_counts, rows_of
from hf_minitron.architectures.spec import text_config


def test_registry_covers_the_tiny_model_families():
    assert sorted(supported_model_types()) == sorted(ARCHITECTURES + MOE + HYBRID)


@pytest.mark.parametrize("arch", ARCHITECTURES + MOE + HYBRID)
def test_every_declared_slice_matches_a_parameter_of_that_size(arch):
    """Each slice's segments add up to the tensor dim it cuts: a renamed or re-laid-out module is caught."""
    model = tiny_model(arch)
    spec = get_spec(model)
    assert spec is get_spec(model.config) is get_spec(arch)
    config, shape = text_config(model.config), spec.shape(model.config)
    layers = spec.layers(model)
    assert isinstance(layers, torch.nn.ModuleList) and len(layers) == shape["num_hidden_layers"]
    assert spec.lm_head(model) is model.get_output_embeddings()
    assert spec.embed(model) is model.get_input_embeddings()
    # buffers too: a router's score-correction bias moves with its experts
    named = {**dict(model.named_buffers()), **dict(model.named_parameters(remove_duplicate=False))}
    kinds = spec.layer_kinds(model.config)
    for group in spec.groups:
        counts = index_counts(group, shape)
        found = set()
        roots = [""]
        if group.scope == "layer":
            own = [i for i in range(len(layers)) if kinds is None or applies(group.layer_kinds, kinds[i])]
            assert own, f"{arch}: {group.name} lives in no layer of the tiny model"
            roots = [f"{spec.layers_path}.{i}." for i in own]
        for root in roots:
            for s in group.slices:
                for path in expand(s.path, len(layers), kinds, s.layer_kinds):
                    param = named.get(root + path)
                    if param is None:
                        assert path.endswith(".bias") or s.optional, (
                            f"{arch}: {root + path} is not a parameter"
                        )
                        continue
                    found.add(s)
                    size = sum(counts[seg.index] * rows_of(seg.rows, config) for seg in s.segments)
                    assert param.shape[s.dim] == size, (arch, root + path)
                    if s.block_dim is not None:
                        assert param.shape[s.block_dim] == shape[group.within], (arch, root + path)
            for path in group.observe.modules:
                for p in expand(path, len(layers), kinds):
                    if not group.observe.optional:
                        model.get_submodule(root + p)
        # an optional slice is still a parameter somewhere (a renamed expert tensor is caught)
        missing = [s.path for s in group.slices if s not in found and not s.path.endswith("bias")]
        assert not missing, (arch, missing)
    for path in spec.module_paths(len(layers), kinds):
        model.get_submodule(path)


@pytest.mark.parametrize("arch", ARCHITECTURES + MOE + HYBRID)
def test_spec_numerics_match_the_model(arch):
    model = tiny_model(arch)
    spec = get_spec(model)
    # norm_weight_offset: with zero weight (and bias) a (1 + w) norm is the plain normalization
    norm = spec.final_norm(model)
    x = torch.randn(3, text_config(model.config).hidden_size)
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
    expected = math.sqrt(text_config(model.config).hidden_size) if spec.embed_scale_from_hidden_size else 1.0
    assert ratio == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("arch", ARCHITECTURES + MOE + HYBRID)
def test_config_fields_named_in_spec_exist(arch):
    config = text_config(tiny_config(arch))
    spec = get_spec(tiny_config(arch))
    for name in spec.layer_prefix_count_fields:
        assert isinstance(getattr(config, name), int)
    for name in spec.size_keys:
        assert isinstance(getattr(config, name), int), name


def test_unsupported_type_lists_supported():
    with pytest.raises(ValueError, match=r"model_type='gpt2' is not supported: allowed one of \[.*'llama'"):
        get_spec("gpt2")


def test_no_module_outside_architectures_names_a_model_type():
    """Architecture knowledge is data in one place: no string literal outside architectures/ is a model type."""
    root = pathlib.Path(hf_minitron.__file__).parent
    types = set(supported_model_types())
    offenders = []
    for path in root.rglob("*.py"):
        if "architectures" in path.relative_to(root).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in types:
                offenders.append(f"{path.relative_to(root)}:{node.lineno} {node.value!r}")
    assert not offenders, offenders
