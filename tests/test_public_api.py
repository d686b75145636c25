"""The documented top-level names resolve, lazily, to the objects their modules define."""

import importlib

import hf_minitron


def test_every_public_name_resolves_to_its_module_object():
    assert set(hf_minitron.__all__) - {"__version__"} == set(hf_minitron._LAZY)
    for name, module in hf_minitron._LAZY.items():
        assert getattr(hf_minitron, name) is getattr(importlib.import_module(module), name)


def test_unknown_attribute_raises_attribute_error():
    try:
        hf_minitron.not_a_name  # noqa: B018
    except AttributeError as e:
        assert "not_a_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")
