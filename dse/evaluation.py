"""One trial, in one straight line: γ → validate → surgery (cache) → objectives → decision → record → undo.

The :class:`Evaluator` measures the undecomposed baseline once and then any number of
γ against it, with objectives taken from :data:`objectives.registry.OBJECTIVES` by name.
Accuracy is a paired comparison on the same documents, looked at chunk by chunk and
decided with corrected intervals (:mod:`objectives.sequential`); its baseline (with
per-document results) is stored and reused across processes. Latency and energy are
ratios from paired ABBA runs of the original and decomposed modules, with intervals
(:mod:`objectives.efficiency`); the baseline record's own latency and energy are for
information only.

The trial reads top to bottom in :meth:`Evaluator.evaluate`; how accuracy is measured and
decided is :mod:`dse.trial_accuracy`, how efficiency is compared :mod:`dse.trial_efficiency`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dse import trial_accuracy
from dse.records import (
    BaselineRecord,
    EfficiencyRecord,
    MeasurementSettings,
    TaskRecord,
    TrialRecord,
    _hash,
    software_versions,
)
from dse.trial_efficiency import TRIAL_EFFICIENCY, hardware_identity, measure_efficiency, paired_efficiency, ratio
from objectives.registry import make
from space.config import DecompositionConfig
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.cache import FactorCache
    from dse.models import LoadedModel
    from dse.screen import ScreenDecision
    from objectives.accuracy import AccuracyMeasurement
    from objectives.efficiency import PairedComparison
    from objectives.sequential import Decision, SequentialDecider

__all__ = [
    "BaselineRecord",
    "EfficiencyRecord",
    "Evaluator",
    "TrialOutcome",
    "MeasurementSettings",
    "TaskRecord",
    "TrialRecord",
    "hardware_identity",
    "software_versions",
]

@dataclass(frozen=True)
class TrialOutcome:
    """What one trial of a study produced: its record, and whether the memo should keep it.

    ``source``: ``memo`` (a stored measurement re-judged under this τ), ``measured`` (new:
    ``fresh``, to be stored), or ``screened`` (the KL screen skipped γ; no record).
    """

    source: Literal["memo", "measured", "screened"]
    record: dict[str, Any] | None
    screen: ScreenDecision | None = None

    @property
    def fresh(self) -> bool:
        """A new measurement, which the memo stores."""
        return self.source == "measured"


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

        self.loaded = loaded
        self.settings = settings
        self.cache = cache if cache is not None else FactorCache()
        self.progress = progress
        self.accuracy = make(
            "accuracy", settings.tasks, limit=settings.planned_limit, batch_size=settings.batch_size,
            data_dir=settings.data_dir, show_progress=progress, order_seed=settings.order_seed, fast=settings.fast,
        )
        self._efficiency_baseline: EfficiencyRecord | None = None
        self._hardware: dict[str, Any] | None = None
        self.evaluations = 0  # trials actually measured (not memo answers) in this process

    # ---- identity -----------------------------------------------------------------

    def hardware(self) -> dict[str, Any]:
        """Processor, torch version, threads and energy method of this evaluator's measurements."""
        if self._hardware is None:
            from objectives.efficiency import choose_threads

            method = None
            if self.settings.measure_energy:
                meter, release = make("energy", self.settings.workload).meter_for(self.loaded.device)
                try:
                    meter.start()
                    method = meter.stop().method
                finally:
                    release()
            self._hardware = hardware_identity(self.loaded.device, threads=choose_threads(self.settings.threads),
                                               energy_method=method)
        return self._hardware

    def memo_key(self) -> str:
        """The settings key, with the hardware identity when latency or energy are measured."""
        key = self.settings.key()
        if self.settings.measure_latency or self.settings.measure_energy:
            return _hash({"settings": key, "hardware": self.hardware()})
        return key

    # ---- efficiency ---------------------------------------------------------------

    def measure_efficiency(self) -> EfficiencyRecord:
        """Latency, energy and memory of the model as it is now (for information)."""
        return measure_efficiency(self.loaded, self.settings)

    def efficiency_baseline(self) -> EfficiencyRecord:
        """The undecomposed model's efficiency, measured once in this process."""
        if self._efficiency_baseline is None:
            if self.loaded.applied is not None:
                from dse.surgery import undo

                undo(self.loaded)
            self._efficiency_baseline = self.measure_efficiency()
        return self._efficiency_baseline

    def paired_efficiency(self) -> tuple[PairedComparison | None, int | None, int | None]:
        """Ratios of the installed γ to the original from ABBA runs; memory after and before."""
        return paired_efficiency(self.loaded, self.settings)

    # ---- baseline -----------------------------------------------------------------

    def baseline(self) -> BaselineRecord:
        """Measure the undecomposed model: accuracy with per-document results, efficiency."""
        from dse.surgery import count_parameters, undo

        if self.loaded.applied is not None:
            undo(self.loaded)
        started = time.perf_counter()
        accuracy = self.accuracy.measure(self.loaded.target())
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
                "the stored baseline was measured on other tasks, limit, document order or batch size "
                f"({baseline.settings_key} vs {self.settings.accuracy_key()})"
            )

    # ---- accuracy and its decision ----------------------------------------------------

    def decider(self, baseline: AccuracyMeasurement, tau: float) -> SequentialDecider:
        """The sequential decision rule of these settings, for a trial against ``baseline``."""
        return trial_accuracy.decider(self.settings, baseline, tau)

    def accuracy_fields(self, baseline: BaselineRecord, measured: AccuracyMeasurement,
                        decision: Decision | None) -> dict[str, Any]:
        """The accuracy and decision fields of a trial record, from a measurement and its decision."""
        return trial_accuracy.accuracy_fields(self.settings, baseline, measured, decision)

    def rederive(self, record: dict[str, Any], baseline: BaselineRecord, tau: float) -> TrialRecord | None:
        """A memo record judged under these settings and ``tau`` (:func:`dse.trial_accuracy.rederive`)."""
        return trial_accuracy.rederive(self.settings, record, baseline, tau,
                                       wants_efficiency=self._wants_efficiency())

    # ---- trials -------------------------------------------------------------------

    def trial(self, gamma: DecompositionConfig, baseline: BaselineRecord, *, tau: float,
              stored: dict[str, Any] | None = None,
              screen: Callable[[DecompositionConfig], ScreenDecision] | None = None) -> TrialOutcome:
        """A study trial's record: ``stored`` re-judged under ``tau`` where it can be, else screened, else measured.

        ``stored`` is the memo's record of γ (:meth:`rederive` decides whether it still
        answers); ``screen`` the study's KL screen, consulted only before a measurement.
        """
        if stored is not None:
            rederived = self.rederive(stored, baseline, tau)
            if rederived is not None:
                return TrialOutcome("memo", rederived.model_dump(mode="json"))
        decision = screen(gamma) if screen is not None else None
        if decision is not None and decision.skip:
            return TrialOutcome("screened", None, decision)
        record = self.evaluate(gamma, baseline, tau=tau).model_dump(mode="json")
        if decision is not None:
            record["kl_divergence"] = decision.kl
        return TrialOutcome("measured", record, decision)

    def evaluate(
        self, gamma: DecompositionConfig, baseline: BaselineRecord, *, tau: float | None = None
    ) -> TrialRecord:
        """Apply γ, measure it against ``baseline``, decide it under ``tau``, undo it.

        With ``tau`` the record says whether γ is feasible under the settings' mode, how
        many documents decided it and why. With ``settings.chunk_size`` the accuracy
        evaluation stops at the first look whose corrected interval is above τ; such a
        trial is ``early_stopped`` and has no latency or energy (not worth measuring).
        """
        from dse.surgery import count_parameters, decomposed

        self.check_baseline(baseline)
        spec = self.loaded.spec
        gamma.validate_for(spec)  # before touching the model
        started = time.perf_counter()
        with decomposed(self.loaded, gamma, cache=self.cache, method=self.settings.method) as report:
            measured, decision = trial_accuracy.measure_accuracy(
                self.accuracy, self.loaded.target(), self.settings, baseline.accuracy_result(), tau)
            comparison, memory, memory_before = None, None, None
            if not (decision is not None and decision.stopped_early) and self._wants_efficiency():
                comparison, memory, memory_before = self.paired_efficiency()
            params_after = count_parameters(self.loaded.model)
        self.evaluations += 1
        efficiency: dict[str, Any] = {}
        if comparison is not None:
            efficiency = comparison.model_dump(include=TRIAL_EFFICIENCY)
            efficiency["hardware"] = self.hardware()
        return TrialRecord(
            gamma=gamma.canonical(spec),
            gamma_hash=gamma.hash(spec),
            gamma_label=gamma.describe(spec),
            **self.accuracy_fields(baseline, measured, decision),
            **efficiency,
            memory_bytes=memory,
            memory_ratio=ratio(memory, memory_before),
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
