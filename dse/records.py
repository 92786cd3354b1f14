"""What a trial is measured under and what it records: the pydantic records of the engine.

:class:`MeasurementSettings` keys the memo and the stored baselines; :class:`TrialRecord`
is stored as Optuna user attributes and in the memo. Keeping them apart from the
:class:`~dse.evaluation.Evaluator` lets queries, the memo and the CLI read records
without importing the measuring code.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from objectives.efficiency import PairedRatios
from objectives.sequential import FeasibilityMode
from objectives.workload import Workload

if TYPE_CHECKING:
    from objectives.accuracy import AccuracyMeasurement

__all__ = [
    "Aggregate",
    "BaselineRecord",
    "EfficiencyRecord",
    "MeasurementSettings",
    "TaskRecord",
    "TrialRecord",
    "software_versions",
]

Aggregate = Literal["mean", "max", "weighted"]
# Settings that change how a measurement is *judged*, not what is measured: the memo
# reuses measurements across them and re-derives the decisions.
_DECISION_FIELDS = frozenset({"chunk_size", "confidence", "aggregate", "feasibility", "limit", "max_limit",
                              "ratio_width", "max_repeats"})


class MeasurementSettings(BaseModel):
    """Everything that changes what a trial measures; its ``key()`` keys baselines and the memo."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: tuple[str, ...]
    limit: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=16, ge=1)
    data_dir: str | None = None
    aggregate: Aggregate = "mean"
    workload: Workload = Field(default_factory=Workload)
    measure_latency: bool = True
    measure_energy: bool = True
    measure_memory: bool = True
    chunk_size: int | None = Field(default=None, ge=1)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    method: Literal["svd", "hooi", "asvd", "svd-llm", "feature", "activation"] = "svd"
    # The calibration statistics' key (and method options) the calibrated methods use.
    calibration: str | None = None
    # Where the model runs: latency and energy ratios of a GPU and a CPU differ, so the memo
    # must not answer one with the other (the weights' fingerprint is the same on both).
    device: str = "cpu"
    # Documents in a seeded random order (the same for the baseline and every trial), so
    # that the chunks of a sequential decision are exchangeable; "file" is file order.
    document_order: Literal["seeded", "file"] = "seeded"
    document_seed: int = Field(default=0, ge=0)
    feasibility: FeasibilityMode = "point"
    max_limit: int | None = Field(default=None, ge=1)
    # Efficiency: threads of the timed runs (None: the cores this process may use), and
    # ABBA blocks until the latency ratio's interval is within ±ratio_width or max_repeats.
    threads: int | None = Field(default=None, ge=1)
    ratio_width: float = Field(default=0.02, gt=0.0, lt=1.0)
    max_repeats: int = Field(default=8, ge=2)
    # Accuracy by the engine's fast path (objectives/fast_lm.py) or lm-eval's HFLM: the same
    # per-document outcomes, log-likelihoods equal up to float32 rounding, so not in the keys.
    fast: bool = True

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        from objectives.tasks import task_list

        return task_list(tasks)

    @model_validator(mode="after")
    def _limits(self) -> MeasurementSettings:
        if self.max_limit is not None and self.limit is not None and self.max_limit < self.limit:
            raise ValueError(f"max_limit ({self.max_limit}) must be at least limit ({self.limit})")
        return self

    @property
    def planned_limit(self) -> int | None:
        """Documents per task a complete measurement holds (``max_limit`` when adaptive)."""
        return self.max_limit if self.feasibility == "adaptive" else self.limit

    @property
    def look_every(self) -> int | None:
        """Documents per task between looks (None: one look, at the end)."""
        if self.chunk_size is not None:
            return self.chunk_size
        return self.limit if self.feasibility == "adaptive" else None

    @property
    def order_seed(self) -> int | None:
        return self.document_seed if self.document_order == "seeded" else None

    def key(self) -> str:
        """A stable hash of what changes a trial's measurement (not how it is judged).

        Keys the memo: a γ measured under the same model fingerprint and key is not
        measured again; decisions (τ, confidence, feasibility mode, chunks) are re-derived.
        """
        unset = {"calibration"} if self.calibration is None else set()
        payload = self.model_dump(mode="json", exclude={"data_dir", "fast", *_DECISION_FIELDS} | unset)
        payload["planned_limit"] = self.planned_limit
        return _hash({"settings": payload, "lm_eval": software_versions().get("lm_eval", "")})

    def accuracy_key(self) -> str:
        """A stable hash of what changes accuracy results: keys the stored baseline.

        Narrower than :meth:`key`, so switching latency or energy on and off reuses the
        accuracy baseline.
        """
        payload = {"tasks": list(self.tasks), "limit": self.planned_limit, "batch_size": self.batch_size,
                   "order": self.document_order, "seed": self.order_seed}
        return _hash({"accuracy": payload, "lm_eval": software_versions().get("lm_eval", "")})


def _hash(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class EfficiencyRecord(BaseModel):
    """Latency, energy and memory of one model state, measured in one process."""

    latency_s: float | None = None
    latency_spread_s: float | None = None
    latency_method: str | None = None
    energy_j: float | None = None
    energy_method: str | None = None
    energy_estimated: bool | None = None
    memory_bytes: int | None = None
    peak_memory_bytes: int | None = None
    memory_method: str | None = None


class BaselineRecord(BaseModel):
    """The undecomposed model, measured once per (fingerprint, accuracy key).

    ``settings_key`` is :meth:`MeasurementSettings.accuracy_key`.
    """

    model: str
    fingerprint: str
    settings_key: str
    accuracy: float
    per_task: dict[str, float]
    accuracy_measurement: Any  # objectives.accuracy.AccuracyMeasurement (kept as data)
    latency_s: float | None = None
    energy_j: float | None = None
    energy_method: str | None = None
    energy_estimated: bool | None = None
    memory_bytes: int | None = None
    params: int
    versions: dict[str, str]
    seconds: float

    def accuracy_result(self) -> AccuracyMeasurement:
        from objectives.accuracy import AccuracyMeasurement

        if isinstance(self.accuracy_measurement, AccuracyMeasurement):
            return self.accuracy_measurement
        return AccuracyMeasurement.model_validate(self.accuracy_measurement)


class TaskRecord(BaseModel):
    """One task's paired drop in a trial."""

    accuracy: float
    baseline_accuracy: float
    drop_pp: float
    ci_low_pp: float | None = None
    ci_high_pp: float | None = None
    n_docs: int


class TrialRecord(PairedRatios):
    """All a trial measured and how it was decided; stored as Optuna user attributes and in the memo.

    ``drop_ci_*`` is the fixed-sample interval of the documents evaluated;
    ``decision_ci_pp`` the interval the decision used (corrected for the looks made).
    ``per_doc`` (the γ's per-document results) is kept in the memo, so that a later
    study re-derives feasibility and early stop under its own τ and confidence.
    """

    gamma: dict[str, Any]
    gamma_hash: str
    gamma_label: str
    accuracy: float
    baseline_accuracy: float
    accuracy_drop_pp: float
    drop_ci_low_pp: float
    drop_ci_high_pp: float
    per_task: dict[str, TaskRecord]
    early_stopped: bool = False
    stop_reason: str | None = None
    # the accuracy constraint's decision (None when no τ was given)
    tau: float | None = None
    feasible: bool | None = None
    feasibility: str | None = None
    decided_by: str | None = None
    decision_docs: int | None = None
    decision_ci_pp: list[float] | None = None
    decision_confidence: float | None = None
    accuracy_key: str | None = None
    per_doc: dict[str, list[float]] | None = None
    # efficiency: the PairedRatios fields (ratios to the original model from paired ABBA runs), and
    repeats: int | None = None
    noisy: bool | None = None
    noise: list[str] | None = None
    threads: int | None = None
    hardware: dict[str, Any] | None = None
    standins: dict[str, str] | None = None
    memory_bytes: int | None = None
    memory_ratio: float | None = None
    params: int
    params_before: int
    param_reduction_pct: float
    max_rel_error: float | None = None
    decompose_seconds: float
    evaluate_seconds: float
    cache_hits: int
    cache_misses: int
    versions: dict[str, str]


def software_versions() -> dict[str, str]:
    """Versions of what shapes a measurement, recorded with every trial."""
    from importlib import metadata

    versions: dict[str, str] = {}
    for dist, key in (
        ("lowrank-dse", "dse"), ("torch", "torch"), ("transformers", "transformers"),
        ("lm-eval", "lm_eval"), ("optuna", "optuna"), ("tensorly", "tensorly"),
    ):
        try:
            versions[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[key] = "absent"
    return versions
