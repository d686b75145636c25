"""Structured pruning surgery: slicing, width, depth, config update."""

from __future__ import annotations

from hf_minitron.pruning.prune import prune_model

__all__ = ["prune_model"]
