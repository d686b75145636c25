"""Importance estimation: hooks, activation statistics, depth metrics, `ImportanceScores`."""

from __future__ import annotations

from hf_minitron.importance.scores import ImportanceScores

__all__ = ["ImportanceScores", "estimate_importance"]


def __getattr__(name):
    if name == "estimate_importance":
        from hf_minitron.importance.estimate import estimate_importance

        return estimate_importance
    raise AttributeError(name)
