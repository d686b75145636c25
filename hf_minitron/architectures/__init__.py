"""Per-architecture facts as data, registered by `config.model_type`."""

from __future__ import annotations

from hf_minitron.architectures import gemma, llama, nemotron, qwen  # noqa: F401  (registration)
from hf_minitron.architectures.spec import ArchitectureSpec, get_spec, register, supported_model_types

__all__ = ["ArchitectureSpec", "get_spec", "register", "supported_model_types"]
