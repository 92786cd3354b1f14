"""The objectives a trial can measure, by name: what the Evaluator composes a trial from.

Lazy ``"module:class"`` entries, so listing them imports neither torch nor lm-eval.
``accuracy`` is paired against the baseline with sequential decisions; ``latency`` and
``energy`` are measured side by side with the original modules
(:mod:`objectives.efficiency`); ``memory`` and ``perplexity`` are plain measurements.
"""

from __future__ import annotations

from typing import Any

from space.registry import Registry

__all__ = ["OBJECTIVES", "make"]

OBJECTIVES: Registry[type[Any]] = Registry("measured objective")
for _name, _ref in (
    ("accuracy", "objectives.accuracy:AccuracyObjective"),
    ("latency", "objectives.latency:LatencyObjective"),
    ("energy", "objectives.energy:EnergyObjective"),
    ("memory", "objectives.memory:MemoryObjective"),
    ("perplexity", "objectives.perplexity:PerplexityObjective"),
):
    OBJECTIVES.register(_name, _ref)


def make(name: str, *args: Any, **kwargs: Any) -> Any:
    """An instance of the objective registered as ``name``.

    Raises:
        UnknownNameError: no objective of that name; the message lists the known ones.
    """
    return OBJECTIVES.get(name)(*args, **kwargs)
