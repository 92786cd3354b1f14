"""The base of every objective: what a trial measures on a loaded (possibly decomposed) model.

Modelled on optuna's ``BaseSampler``: one abstract method, optional hooks that do
nothing by default, and small subclasses (accuracy, perplexity, latency, energy,
memory), each returning a pydantic record.

Contract: ``measure()`` never modifies the model (weights, modules, training mode
afterwards); it may run forward passes under ``torch.no_grad()`` and must leave
``model.training`` as it found it. Objectives are not thread safe: one trial at a time
per process.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

__all__ = ["EvalTarget", "Measurement", "Objective"]


@dataclass
class EvalTarget:
    """What an objective measures: a loaded model with its tokenizer, where it runs."""

    model: torch.nn.Module
    tokenizer: Any
    device: str = "cpu"
    # Free-form facts about the model (name, fingerprint) an objective may record.
    info: dict[str, Any] = field(default_factory=dict)


class Measurement(BaseModel):
    """The base record every objective returns; subclasses add their fields."""

    model_config = ConfigDict(extra="forbid")

    objective: str


class Objective(abc.ABC):
    """One thing a trial measures."""

    name: ClassVar[str]

    def setup(self, target: EvalTarget) -> None:  # noqa: B027 - an optional hook; by default nothing
        """Called once per process before the first ``measure``, e.g. to warm up. Optional."""

    @abc.abstractmethod
    def measure(self, target: EvalTarget) -> Measurement:
        """Called once per trial, after γ is applied and before it is undone."""
