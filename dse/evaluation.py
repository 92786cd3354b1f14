"""One trial, in one straight line: γ → validate → surgery (cache) → objectives → decision → record → undo.

The :class:`Evaluator` measures the undecomposed baseline once and then any number of
γ against it, with objectives taken from :data:`objectives.registry.OBJECTIVES` by name.
Accuracy is a paired comparison on the same documents, looked at chunk by chunk and
decided with corrected intervals (:mod:`objectives.sequential`); its baseline (with
per-document results) is stored and reused across processes. Latency and energy are
ratios from paired ABBA runs of the original and decomposed modules, with intervals
(:mod:`objectives.efficiency`); the baseline record's own latency and energy are for
information only.

One module because it is one trial, read top to bottom.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dse.records import (
    BaselineRecord,
    EfficiencyRecord,
    MeasurementSettings,
    TaskRecord,
    TrialRecord,
    _hash,
    software_versions,
)
from objectives.efficiency import PairedRatios
from objectives.registry import make
from space.config import DecompositionConfig
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.cache import FactorCache
    from dse.models import LoadedModel
    from objectives.accuracy import AccuracyMeasurement
    from objectives.efficiency import PairedComparison
    from objectives.sequential import Decision, SequentialDecider

__all__ = [
    "BaselineRecord",
    "EfficiencyRecord",
    "Evaluator",
    "MeasurementSettings",
    "TaskRecord",
    "TrialRecord",
    "hardware_identity",
    "software_versions",
]

# What a trial keeps of a paired comparison: the ratios and how the runs went (not the baselines).
_TRIAL_EFFICIENCY = set(PairedRatios.model_fields) | {"repeats", "noisy", "noise", "threads", "standins"}


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


def hardware_identity(device: str, *, threads: int, energy_method: str | None) -> dict[str, Any]:
    """What a latency or energy ratio depends on besides the model: keys the memo with it."""
    import platform

    import torch

    if device.startswith("cuda"):
        processor = torch.cuda.get_device_name(device)
    else:
        processor = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115 - read until found
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    return {"processor": processor, "torch": torch.__version__, "threads": threads, "energy_method": energy_method}


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
        target = self.loaded.target()
        record = EfficiencyRecord()
        workload = self.settings.workload
        if self.settings.measure_latency:
            latency = make("latency", workload).measure(target)
            record.latency_s = latency.median_s
            record.latency_spread_s = latency.spread_s
            record.latency_method = latency.method
        if self.settings.measure_energy:
            energy = make("energy", workload).measure(target)
            record.energy_j = energy.energy_j
            record.energy_method = energy.method
            record.energy_estimated = energy.estimated
            if record.latency_s is None:
                record.latency_s = energy.latency_s
        if self.settings.measure_memory:
            memory = make("memory", workload).measure(target)
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

    def paired_efficiency(self) -> tuple[PairedComparison | None, int | None, int | None]:
        """Ratios of the installed γ to the original from ABBA runs; memory after and before."""
        from objectives.efficiency import compare_paired
        from objectives.memory import model_memory

        s = self.settings
        target = self.loaded.target()
        comparison = None
        with _module_states(self.loaded) as use:
            use("baseline")
            _, base_params, base_buffers = model_memory(self.loaded.model)
            if s.measure_latency or s.measure_energy:
                comparison = compare_paired(
                    target, use, workload=s.workload,
                    latency=make("latency", s.workload) if s.measure_latency else None,
                    energy=make("energy", s.workload) if s.measure_energy else None,
                    width=s.ratio_width, min_blocks=s.workload.repeats, max_blocks=s.max_repeats,
                    threads=s.threads,
                )
            use("compressed")
            memory = make("memory", s.workload.model_copy(update={"warmup": 0, "repeats": 1})).measure(target) \
                if s.measure_memory else None
        if memory is None:
            return comparison, None, None
        return comparison, memory.model_bytes, base_params + base_buffers

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
        from objectives.sequential import SequentialDecider

        s = self.settings
        planned = {name: task.n_planned for name, task in baseline.per_task.items()}
        minimum = sum(min(n, s.limit) if s.limit is not None else n for n in planned.values())
        return SequentialDecider(tau=tau, confidence=s.confidence, mode=s.feasibility,
                                 planned_docs=sum(planned.values()), min_docs=minimum,
                                 early_stop=s.chunk_size is not None or s.feasibility == "adaptive")

    def _measure_accuracy(self, baseline: AccuracyMeasurement,
                          tau: float | None) -> tuple[AccuracyMeasurement, Decision | None]:
        from objectives.paired import paired_drop

        target = self.loaded.target()
        every = self.settings.look_every
        if tau is None:
            return self.accuracy.measure(target), None
        decider = self.decider(baseline, tau)

        def look(partial: AccuracyMeasurement, *, final: bool) -> Decision | None:
            return decider.look(
                lambda c: paired_drop(baseline, partial, aggregate=self.settings.aggregate,
                                      confidence=self.settings.confidence, critical=c),
                partial.n_docs_total, final=final,
            )

        decided: list[Decision] = []

        def should_stop(partial: AccuracyMeasurement) -> bool:
            decision = look(partial, final=False)
            if decision is not None:
                decided.append(decision)
            return decision is not None

        if every is None:
            measured = self.accuracy.measure(target)
        else:
            measured = self.accuracy.measure_chunked(target, chunk_size=every, should_stop=should_stop)
        return measured, decided[0] if decided else look(measured, final=True)

    def accuracy_fields(self, baseline: BaselineRecord, measured: AccuracyMeasurement,
                        decision: Decision | None) -> dict[str, Any]:
        """The accuracy and decision fields of a trial record, from a measurement and its decision."""
        from objectives.paired import paired_drop

        base = baseline.accuracy_result()
        drop = paired_drop(base, measured, aggregate=self.settings.aggregate, confidence=self.settings.confidence)
        fields: dict[str, Any] = {
            "accuracy": measured.accuracy,
            "baseline_accuracy": base.accuracy,
            "accuracy_drop_pp": drop.drop_pp,
            "drop_ci_low_pp": drop.ci_low_pp,
            "drop_ci_high_pp": drop.ci_high_pp,
            "per_task": {
                name: TaskRecord(accuracy=measured.per_task[name].accuracy,
                                 baseline_accuracy=base.per_task[name].accuracy, drop_pp=task.drop_pp,
                                 ci_low_pp=task.ci_low_pp, ci_high_pp=task.ci_high_pp, n_docs=task.n_docs)
                for name, task in drop.per_task.items()
            },
            "per_doc": {name: list(task.per_doc) for name, task in measured.per_task.items()},
            "accuracy_key": self.settings.accuracy_key(),
            "early_stopped": False,
            "stop_reason": None,
        }
        if decision is not None:
            fields.update(
                tau=decision.tau, feasible=decision.feasible, feasibility=decision.mode, decided_by=decision.reason,
                decision_docs=decision.docs, decision_ci_pp=[decision.ci_low_pp, decision.ci_high_pp],
                decision_confidence=decision.confidence,
                early_stopped=decision.stopped_early,
                stop_reason=decision.reason if decision.stopped_early else None,
            )
        return fields

    def rederive(self, record: dict[str, Any], baseline: BaselineRecord, tau: float) -> TrialRecord | None:
        """A memo record judged under these settings and ``tau``: its measurement, never its decision.

        Replays the looks on the stored per-document results. None when they end before a
        decision, or efficiency this decision needs was not measured: measure γ again.
        """
        from objectives.sequential import replay

        per_doc = record.get("per_doc")
        if not per_doc or record.get("accuracy_key") != self.settings.accuracy_key():
            return None
        base = baseline.accuracy_result()
        stored = base.model_copy(update={
            "per_task": {name: task.model_copy(update={"per_doc": list(per_doc.get(name, []))})
                         for name, task in base.per_task.items()},
        })
        replayed = replay(base, stored, self.decider(base, tau), chunk_size=self.settings.look_every,
                          aggregate=self.settings.aggregate)
        if replayed is None:
            return None
        decision, measured = replayed
        if not decision.stopped_early and record.get("early_stopped") and self._wants_efficiency():
            return None  # now worth its latency and energy, which were never measured
        return TrialRecord.model_validate(record).model_copy(
            update=self.accuracy_fields(baseline, measured, decision))

    # ---- trials -------------------------------------------------------------------

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
            measured, decision = self._measure_accuracy(baseline.accuracy_result(), tau)
            comparison, memory, memory_before = None, None, None
            if not (decision is not None and decision.stopped_early) and self._wants_efficiency():
                comparison, memory, memory_before = self.paired_efficiency()
            params_after = count_parameters(self.loaded.model)
        self.evaluations += 1
        efficiency: dict[str, Any] = {}
        if comparison is not None:
            efficiency = comparison.model_dump(include=_TRIAL_EFFICIENCY)
            efficiency["hardware"] = self.hardware()
        return TrialRecord(
            gamma=gamma.canonical(spec),
            gamma_hash=gamma.hash(spec),
            gamma_label=gamma.describe(spec),
            **self.accuracy_fields(baseline, measured, decision),
            **efficiency,
            memory_bytes=memory,
            memory_ratio=_ratio(memory, memory_before),
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
