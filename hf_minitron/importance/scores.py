"""`ImportanceScores`: the result of one calibration pass, reusable for many pruning targets."""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from hf_minitron.io import atomic_file

_NORM_PREFIX = "norm_inputs/"  # file keys of `ImportanceScores.norm_inputs`


class ImportanceScores:
    """
    Importance of every prunable unit (higher = more important), float32 CPU tensors keyed by dimension group.

    Args:
        metadata (`dict`): The settings that produced them (criterion, aggregations, depth metric, shape, samples).
        **tensors: One tensor per group name, `None` when not scored: `[num_layers, units]` for per-layer groups
            (`neurons`: MLP neurons, `heads`: query heads, `experts`), `[num_layers, blocks, units]` for units
            ranked within blocks (`expert_neurons`: `[layers, experts, width]`), `[units]` for model-wide ones
            (`channels`), and `layers`: `[num_layers]`. Read them as attributes (`scores.neurons`) or with `scores.get(name)`.

    Attributes:
        norm_inputs (`dict[str, torch.Tensor]`): Per-channel mean square of the input of every norm whose statistic
            spans a scored dim, over the non-padded calibration tokens (centered on each token's mean for a
            LayerNorm), keyed by the norm's module path in the scored model; empty for magnitude scores. Pruning
            uses them to rescale the kept gains by the energy the norm really loses.
    """

    def __init__(self, metadata: dict[str, Any] | None = None, **tensors: torch.Tensor | None):
        self.metadata = dict(metadata or {})
        self.tensors: dict[str, torch.Tensor] = {}
        self.norm_inputs: dict[str, torch.Tensor] = {}
        for name, value in tensors.items():
            if name.startswith(_NORM_PREFIX):  # as `save` writes them
                self.norm_inputs[name[len(_NORM_PREFIX) :]] = value.detach().to(
                    device="cpu", dtype=torch.float32
                )
            else:
                self[name] = value

    def __setitem__(self, name: str, value: torch.Tensor | None) -> None:
        if value is None:
            self.tensors.pop(name, None)
        else:
            self.tensors[name] = value.detach().to(device="cpu", dtype=torch.float32)

    def __setattr__(self, name: str, value) -> None:
        if name in ("metadata", "tensors", "norm_inputs"):
            object.__setattr__(self, name, value)
        else:
            self[name] = value

    def __getattr__(self, name: str) -> torch.Tensor | None:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.__dict__.get("tensors", {}).get(name)

    def get(self, name: str) -> torch.Tensor | None:
        """The scores of one group (`None` when not scored)."""
        return self.tensors.get(name)

    def __repr__(self) -> str:
        shapes = {k: tuple(v.shape) for k, v in self.tensors.items()}
        return f"ImportanceScores({shapes}, norm_inputs={len(self.norm_inputs)}, metadata={self.metadata})"

    def save(self, path: str | os.PathLike) -> None:
        """Write the tensors to a safetensors file, keyed by group name, with `metadata` (JSON) in its header."""
        tensors = {n: t.contiguous() for n, t in self.tensors.items()}
        tensors.update({_NORM_PREFIX + p: t.contiguous() for p, t in self.norm_inputs.items()})
        if os.path.dirname(os.fspath(path)):
            os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
        with atomic_file(path) as tmp:
            save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in self.metadata.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImportanceScores:
        """Read scores written by `save` (0.1.0's files have the same keys and load unchanged)."""
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        return cls(metadata=metadata, **load_file(os.fspath(path)))

    def check_compatible(self, model_config) -> None:
        """Raise `ValueError` when a score tensor's shape does not match the model with `model_config`."""
        from hf_minitron.architectures import get_spec

        spec = get_spec(model_config)
        shape = spec.shape(model_config)
        n_layers = shape["num_hidden_layers"]
        expected = {"layers": (n_layers,)}
        from hf_minitron.architectures.dimensions import unit_shape

        for group in spec.groups:
            units = unit_shape(group, shape)
            expected[group.name] = (n_layers, *units) if group.scope == "layer" else units
        for name, value in self.tensors.items():
            if name in expected and tuple(value.shape) != expected[name]:
                raise ValueError(
                    f"scores.{name} has shape {tuple(value.shape)} but the model needs {expected[name]}: "
                    "these scores were computed for another model shape"
                )
