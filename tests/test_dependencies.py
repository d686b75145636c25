"""The transformers floor: pyproject declares the version the code needs, and importing hf_minitron with an older
one fails at once with the fix. (Found by running the suite on older wheels: 5.22 lacks
`TrainingArguments.activation_checkpointing`, which the shipped recipes set.)"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.version import Version

import hf_minitron

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _declared_floor() -> str:
    (spec,) = re.findall(r'"transformers>=([0-9.]+),<6"', PYPROJECT.read_text())
    return spec


def test_declared_floor_is_the_checked_floor():
    assert Version(_declared_floor()) == Version(hf_minitron.MIN_TRANSFORMERS_VERSION)


def test_installed_transformers_meets_the_floor():
    assert Version(version("transformers")) >= Version(hf_minitron.MIN_TRANSFORMERS_VERSION)


def test_the_feature_that_sets_the_floor_exists():
    from transformers import TrainingArguments

    assert "activation_checkpointing" in TrainingArguments.__dataclass_fields__


@pytest.mark.parametrize("old", ["5.0.0", "5.22.0"])
def test_import_check_refuses_an_older_transformers(old):
    with pytest.raises(ImportError, match=re.escape(f"transformers>={hf_minitron.MIN_TRANSFORMERS_VERSION}")):
        hf_minitron._check_transformers(old)
    hf_minitron._check_transformers(hf_minitron.MIN_TRANSFORMERS_VERSION)
    hf_minitron._check_transformers("5.24.0")
