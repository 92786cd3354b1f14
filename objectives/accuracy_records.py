"""What an accuracy measurement records: per task, per document, in the task's fixed document order."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from objectives.base import Measurement

__all__ = ["TaskAccuracy", "AccuracyMeasurement"]


class TaskAccuracy(BaseModel):
    """One requested task's result.

    ``per_doc`` holds each evaluated document's metric value in the task's fixed
    document order (see the module docstring); ``n_planned`` is how many documents the
    complete measurement covers.
    """

    model_config = ConfigDict(extra="forbid")

    task: str
    metric: str
    accuracy: float
    n_docs: int
    n_planned: int
    per_doc: list[float]


class AccuracyMeasurement(Measurement):
    """Accuracy on the requested tasks; ``complete`` is False for a run stopped early."""

    objective: Literal["accuracy"] = "accuracy"
    per_task: dict[str, TaskAccuracy]
    accuracy: float = Field(description="unweighted mean of the tasks' accuracies")
    complete: bool
    n_docs_total: int
    limit: int | None
    seconds: float
    lm_eval_version: str
