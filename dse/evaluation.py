"""One trial, in one straight line: γ → validate → surgery (cache) → objectives → record → undo.

The :class:`Evaluator` measures the undecomposed baseline once and then any number of
γ against it. Accuracy is a paired comparison on the same documents, so its baseline
(with per-document results) is stored and reused across processes. Latency and energy
are noisy on shared machines, so every trial times the original and the decomposed
modules side by side (alternating, ABBA) and reports ratios from those paired runs; the
baseline record's own latency and energy are for information only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from objectives.workload import Workload
from space.config import DecompositionConfig
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.cache import FactorCache
    from dse.models import LoadedModel
    from objectives.accuracy import AccuracyMeasurement

__all__ = [
    "MeasurementSettings",
    "BaselineRecord",
    "EfficiencyRecord",
    "TaskRecord",
    "TrialRecord",
    "Evaluator",
    "software_versions",
]

Aggregate = Literal["mean", "max", "weighted"]


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

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, tasks: tuple[str, ...]) -> tuple[str, ...]:
        from objectives.tasks import task_list

        return task_list(tasks)

    def key(self) -> str:
        """A stable hash of what changes a trial's record (not where the data lives).

        Keys the memo: a γ measured under the same model fingerprint and key is not
        measured again.
        """
        unset = {"calibration"} if self.calibration is None else set()  # old keys stay valid
        payload = self.model_dump(mode="json", exclude={"data_dir", "chunk_size"} | unset)
        return _hash({"settings": payload, "lm_eval": software_versions().get("lm_eval", "")})

    def accuracy_key(self) -> str:
        """A stable hash of what changes accuracy results: keys the stored baseline.

        Narrower than :meth:`key`, so switching latency or energy on and off reuses the
        accuracy baseline.
        """
        payload = {"tasks": list(self.tasks), "limit": self.limit, "batch_size": self.batch_size}
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
    """One task's accuracy in a trial, its baseline and the paired drop (with its interval)."""

    accuracy: float
    baseline_accuracy: float
    drop_pp: float
    ci_low_pp: float | None = None
    ci_high_pp: float | None = None
    n_docs: int


class TrialRecord(BaseModel):
    """All a trial measured; stored as Optuna user attributes and in the memo."""

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
    latency_s: float | None = None
    latency_ratio: float | None = None
    energy_j: float | None = None
    energy_ratio: float | None = None
    energy_method: str | None = None
    energy_estimated: bool | None = None
    edp_ratio: float | None = None
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


@contextlib.contextmanager
def _module_states(loaded: LoadedModel) -> Iterator[Callable[[str], None]]:
    """Switch an applied model between its original and decomposed modules; ends decomposed."""
    compressed = {path: loaded.model.get_submodule(path) for path in loaded.originals}
    originals = dict(loaded.originals)

    def use(state: str) -> None:
        from dse.surgery import set_module

        for path, module in (originals if state == "baseline" else compressed).items():
            set_module(loaded.model, path, module)

    try:
        yield use
    finally:
        use("compressed")


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base <= 0:
        return None
    return value / base


class Evaluator:
    """Measures the baseline once and each γ against it, on one loaded model.

    Not thread safe: surgery changes the shared model in place for the duration of a trial
    (and always undoes it).
    """

    def __init__(
        self,
        loaded: LoadedModel,
        settings: MeasurementSettings,
        *,
        cache: FactorCache | None = None,
        progress: bool = True,
    ) -> None:
        from dse.cache import FactorCache
        from objectives.accuracy import AccuracyObjective

        self.loaded = loaded
        self.settings = settings
        self.cache = cache if cache is not None else FactorCache()
        self.progress = progress
        self.accuracy = AccuracyObjective(
            settings.tasks, limit=settings.limit, batch_size=settings.batch_size,
            data_dir=settings.data_dir, show_progress=progress,
        )
        self._efficiency_baseline: EfficiencyRecord | None = None
        self.evaluations = 0  # trials actually measured (not memo answers) in this process

    # ---- efficiency ---------------------------------------------------------------

    def measure_efficiency(self) -> EfficiencyRecord:
        """Latency, energy and memory of the model as it is now."""
        from objectives.energy import EnergyObjective
        from objectives.latency import LatencyObjective
        from objectives.memory import MemoryObjective

        target = self.loaded.target()
        record = EfficiencyRecord()
        workload = self.settings.workload
        if self.settings.measure_latency:
            latency = LatencyObjective(workload).measure(target)
            record.latency_s = latency.median_s
            record.latency_spread_s = latency.spread_s
            record.latency_method = latency.method
        if self.settings.measure_energy:
            energy = EnergyObjective(workload).measure(target)
            record.energy_j = energy.energy_j
            record.energy_method = energy.method
            record.energy_estimated = energy.estimated
            if record.latency_s is None:
                record.latency_s = energy.latency_s
        if self.settings.measure_memory:
            memory = MemoryObjective(workload).measure(target)
            record.memory_bytes = memory.model_bytes
            record.peak_memory_bytes = memory.peak_bytes
            record.memory_method = memory.method
        return record

    def efficiency_baseline(self) -> EfficiencyRecord:
        """The undecomposed model's efficiency, measured once in this process."""
        if self._efficiency_baseline is None:
            if self.loaded.applied is not None:
                from dse.surgery import undo

                undo(self.loaded)
            self._efficiency_baseline = self.measure_efficiency()
        return self._efficiency_baseline

    def paired_efficiency(self) -> tuple[EfficiencyRecord, EfficiencyRecord]:
        """Time the installed γ and the original side by side: ``(compressed, baseline)``.

        Runs alternate between the two module sets in ABBA order (swapping modules is
        free: the originals are kept aside), so drift and neighbours' load on a shared
        machine hit both sides alike and the ratio stays honest where two separate
        measurements minutes apart would not. Each run yields both latency and energy.
        """
        from objectives.energy import EnergyObjective
        from objectives.latency import LatencyObjective
        from objectives.memory import MemoryObjective, model_memory
        from objectives.workload import run_workload

        settings = self.settings
        target = self.loaded.target()
        single = settings.workload.model_copy(update={"warmup": 0, "repeats": 1})
        latency: dict[str, list[float]] = {"baseline": [], "compressed": []}
        energy: dict[str, list[float]] = {"baseline": [], "compressed": []}
        energy_method: str | None = None
        energy_estimated: bool | None = None
        # NVML energy counters refresh every 20-100 ms: meter long enough to see them move.
        min_time = 0.5 if self.loaded.device.startswith("cuda") else 0.0
        with _module_states(self.loaded) as use:
            use("baseline")
            _, base_param_bytes, base_buffer_bytes = model_memory(self.loaded.model)
            for state in ("baseline", "compressed"):
                use(state)
                for _ in range(settings.workload.warmup):
                    run_workload(target, settings.workload)
            for round_index in range(settings.workload.repeats):
                order = ("baseline", "compressed") if round_index % 2 == 0 else ("compressed", "baseline")
                for state in order:
                    use(state)
                    if settings.measure_latency:
                        latency[state].append(LatencyObjective(single).measure(target).median_s)
                    if settings.measure_energy:
                        run = EnergyObjective(single, min_time_s=min_time).measure(target)
                        energy[state].append(run.energy_j)
                        energy_method, energy_estimated = run.method, run.estimated
            use("compressed")
            memory = MemoryObjective(single).measure(target) if settings.measure_memory else None

        def record(state: str) -> EfficiencyRecord:
            lat, en = latency[state], energy[state]
            return EfficiencyRecord(
                latency_s=statistics.median(lat) if lat else None,
                latency_spread_s=(max(lat) - min(lat)) if lat else None,
                latency_method="paired-abba",
                energy_j=statistics.median(en) if en else None,
                energy_method=energy_method,
                energy_estimated=energy_estimated,
            )

        compressed, baseline = record("compressed"), record("baseline")
        if memory is not None:
            compressed.memory_bytes = memory.model_bytes
            compressed.peak_memory_bytes = memory.peak_bytes
            compressed.memory_method = memory.method
            baseline.memory_bytes = base_param_bytes + base_buffer_bytes
        return compressed, baseline

    # ---- baseline -----------------------------------------------------------------

    def baseline(self) -> BaselineRecord:
        """Measure the undecomposed model: accuracy with per-document results, efficiency."""
        from dse.surgery import count_parameters, undo

        if self.loaded.applied is not None:
            undo(self.loaded)
        started = time.perf_counter()
        accuracy = self._measure_accuracy()
        efficiency = self.efficiency_baseline()
        return BaselineRecord(
            model=self.loaded.name,
            fingerprint=self.loaded.fingerprint,
            settings_key=self.settings.accuracy_key(),
            accuracy=accuracy.accuracy,
            per_task={name: task.accuracy for name, task in accuracy.per_task.items()},
            accuracy_measurement=accuracy.model_dump(mode="json"),
            latency_s=efficiency.latency_s,
            energy_j=efficiency.energy_j,
            energy_method=efficiency.energy_method,
            energy_estimated=efficiency.energy_estimated,
            memory_bytes=efficiency.memory_bytes,
            params=count_parameters(self.loaded.model),
            versions=software_versions(),
            seconds=time.perf_counter() - started,
        )

    def check_baseline(self, baseline: BaselineRecord) -> None:
        """Refuse a baseline measured on other weights or under other settings."""
        if baseline.fingerprint != self.loaded.fingerprint:
            raise InvalidConfigError(
                f"the stored baseline was measured on weights {baseline.fingerprint}, "
                f"but the loaded model is {self.loaded.fingerprint}"
            )
        if baseline.settings_key != self.settings.accuracy_key():
            raise InvalidConfigError(
                "the stored baseline was measured on other tasks, limit or batch size "
                f"({baseline.settings_key} vs {self.settings.accuracy_key()})"
            )

    # ---- trials -------------------------------------------------------------------

    def _measure_accuracy(
        self,
        *,
        baseline: AccuracyMeasurement | None = None,
        tau: float | None = None,
    ) -> AccuracyMeasurement:
        from objectives.paired import certainly_above, paired_drop

        target = self.loaded.target()
        chunk = self.settings.chunk_size
        if chunk is None:
            return self.accuracy.measure(target)

        def hopeless(partial: AccuracyMeasurement) -> bool:
            if baseline is None or tau is None:
                return False
            estimate = paired_drop(
                baseline, partial, aggregate=self.settings.aggregate,
                confidence=self.settings.confidence,
            )
            return certainly_above(estimate, tau)

        return self.accuracy.measure_chunked(target, chunk_size=chunk, should_stop=hopeless)

    def evaluate(
        self,
        gamma: DecompositionConfig,
        baseline: BaselineRecord,
        *,
        tau: float | None = None,
    ) -> TrialRecord:
        """Apply γ, measure it against ``baseline``, undo it.

        With ``tau`` and ``settings.chunk_size`` set, the accuracy evaluation stops as soon
        as the drop is above τ with the settings' confidence; such a trial is
        ``early_stopped`` and has no latency or energy (they are not worth measuring).
        """
        from dse.surgery import count_parameters, decomposed
        from objectives.paired import paired_drop

        self.check_baseline(baseline)
        spec = self.loaded.spec
        gamma.validate_for(spec)  # before touching the model
        base_accuracy = baseline.accuracy_result()
        started = time.perf_counter()
        with decomposed(self.loaded, gamma, cache=self.cache, method=self.settings.method) as report:
            accuracy = self._measure_accuracy(baseline=base_accuracy, tau=tau)
            early = not accuracy.complete
            efficiency, efficiency_base = EfficiencyRecord(), EfficiencyRecord()
            if not early and self._wants_efficiency():
                efficiency, efficiency_base = self.paired_efficiency()
            params_after = count_parameters(self.loaded.model)
        self.evaluations += 1
        drop = paired_drop(
            base_accuracy, accuracy, aggregate=self.settings.aggregate,
            confidence=self.settings.confidence,
        )
        per_task = {
            name: TaskRecord(
                accuracy=accuracy.per_task[name].accuracy,
                baseline_accuracy=base_accuracy.per_task[name].accuracy,
                drop_pp=task_drop.drop_pp,
                ci_low_pp=task_drop.ci_low_pp,
                ci_high_pp=task_drop.ci_high_pp,
                n_docs=task_drop.n_docs,
            )
            for name, task_drop in drop.per_task.items()
        }
        latency_ratio = _ratio(efficiency.latency_s, efficiency_base.latency_s)
        energy_ratio = _ratio(efficiency.energy_j, efficiency_base.energy_j)
        edp_ratio = None
        if latency_ratio is not None and energy_ratio is not None:
            edp_ratio = latency_ratio * energy_ratio
        elif latency_ratio is not None and not self.settings.measure_energy:
            edp_ratio = latency_ratio * latency_ratio  # energy ∝ time at constant power
        return TrialRecord(
            gamma=gamma.canonical(spec),
            gamma_hash=gamma.hash(spec),
            gamma_label=gamma.describe(spec),
            accuracy=accuracy.accuracy,
            baseline_accuracy=base_accuracy.accuracy,
            accuracy_drop_pp=drop.drop_pp,
            drop_ci_low_pp=drop.ci_low_pp,
            drop_ci_high_pp=drop.ci_high_pp,
            per_task=per_task,
            early_stopped=early,
            stop_reason=(
                f"accuracy drop above τ={tau} pp with {self.settings.confidence:.0%} confidence "
                f"after {drop.n_docs} documents" if early else None
            ),
            latency_s=efficiency.latency_s,
            latency_ratio=latency_ratio,
            energy_j=efficiency.energy_j,
            energy_ratio=energy_ratio,
            energy_method=efficiency.energy_method,
            energy_estimated=efficiency.energy_estimated,
            edp_ratio=edp_ratio,
            memory_bytes=efficiency.memory_bytes,
            memory_ratio=_ratio(efficiency.memory_bytes, efficiency_base.memory_bytes),
            params=params_after,
            params_before=report.params_before,
            param_reduction_pct=report.param_reduction_pct,
            max_rel_error=report.max_rel_error,
            decompose_seconds=report.decompose_seconds,
            evaluate_seconds=time.perf_counter() - started,
            cache_hits=report.cache_hits,
            cache_misses=report.cache_misses,
            versions=software_versions(),
        )

    def _wants_efficiency(self) -> bool:
        s = self.settings
        return s.measure_latency or s.measure_energy or s.measure_memory
