"""`ImportanceScores`: the result of one calibration pass, reusable for many pruning targets."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, safe_open, save_file

from hf_minitron.io import atomic_file

_TENSORS = ("neurons", "heads", "channels", "layers")


@dataclass
class ImportanceScores:
    """
    Importance of every prunable component (higher = more important), float32 CPU tensors.

    Args:
        neurons (`torch.Tensor`, *optional*): `[num_layers, intermediate_size]` MLP neuron scores per layer.
        heads (`torch.Tensor`, *optional*): `[num_layers, num_attention_heads]` query-head scores per layer.
        channels (`torch.Tensor`, *optional*): `[hidden_size]` embedding-channel scores, summed over layers.
        layers (`torch.Tensor`, *optional*): `[num_layers]` layer scores.
        metadata (`dict`): The settings that produced them (criterion, aggregations, depth metric, model type,
            number of samples, shapes).
    """

    neurons: torch.Tensor | None = None
    heads: torch.Tensor | None = None
    channels: torch.Tensor | None = None
    layers: torch.Tensor | None = None
    metadata: dict[str, str | int | float] = field(default_factory=dict)

    def __post_init__(self):
        for name in _TENSORS:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.detach().to(device="cpu", dtype=torch.float32))

    def save(self, path: str | os.PathLike) -> None:
        """Write the tensors to a safetensors file, with `metadata` (JSON-encoded values) in its header."""
        tensors = {n: getattr(self, n).contiguous() for n in _TENSORS if getattr(self, n) is not None}
        if os.path.dirname(os.fspath(path)):
            os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
        with atomic_file(path) as tmp:
            save_file(tensors, tmp, metadata={k: json.dumps(v) for k, v in self.metadata.items()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImportanceScores:
        """Read scores written by `save`."""
        with safe_open(os.fspath(path), framework="pt") as f:
            metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
        tensors = load_file(os.fspath(path))
        return cls(**{n: tensors.get(n) for n in _TENSORS}, metadata=metadata)

    def check_compatible(self, model_config) -> None:
        """Raise `ValueError` when a score tensor's shape does not match the model with `model_config`."""
        n_layers = model_config.num_hidden_layers
        expected = {
            "neurons": (n_layers, model_config.intermediate_size),
            "heads": (n_layers, model_config.num_attention_heads),
            "channels": (model_config.hidden_size,),
            "layers": (n_layers,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(
                    f"scores.{name} has shape {tuple(value.shape)} but the model needs {shape}: "
                    "these scores were computed for another model shape"
                )
