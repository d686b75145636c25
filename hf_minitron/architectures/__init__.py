"""Per-architecture facts as data, registered by `config.model_type`."""

from __future__ import annotations

from hf_minitron.architectures import (  # noqa: F401
    bamba,
    dense,
    ernie4_5_moe,
    falcon_h1,
    gemma,
    glm,
    glm4_moe,
    granitemoe,
    granitemoehybrid,
    llama,
    mistral,
    moe,
    nemotron,
    nemotron_h,
    olmo,
    olmo_hybrid,
    phi,
    phimoe,
    qwen,
    qwen3_5,
    qwen3_next,
)
from hf_minitron.architectures.dimensions import DimensionGroup, Observation, Segment, TensorSlice
from hf_minitron.architectures.spec import ArchitectureSpec, get_spec, register, supported_model_types

__all__ = [
    "ArchitectureSpec",
    "DimensionGroup",
    "Observation",
    "Segment",
    "TensorSlice",
    "get_spec",
    "register",
    "supported_model_types",
]
