"""A deterministic stand-in for the Evaluator: the runner's logic tested in milliseconds.

The fake computes a γ's record from a formula (earlier layers hurt more, like the
paper's Observation 3) instead of running a model, counts its calls, and can be told to
sleep or to raise KeyboardInterrupt on a given call. It returns the real pydantic
records (``BaselineRecord``, ``TrialRecord``), so everything downstream is the real path.

Module-level so spawned worker processes can import it (``evaluator_factory`` must be
picklable). ``STUDY_FAKE_SLEEP`` makes every evaluation sleep that many seconds, for the
test that kills a worker mid-trial; ``STUDY_FAKE_BARRIER`` lines up parallel workers;
``STUDY_FAKE_LOG`` names a file that gets one line (the γ hash) per evaluation, from
every process, so tests can prove that no γ was measured twice. The tests import
these helpers (``TINY_RULES``, ``FakeFactory``, …) from here, never from ``conftest``
(several conftest modules share that name).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dse.evaluation import BaselineRecord, Evaluator, MeasurementSettings, TaskRecord, TrialRecord
from dse.study.definition import StudyDefinition
from dse.study.runner import measurement_settings
from space.config import DecompositionConfig
from space.metrics import parameter_report
from space.presets import load_spec
from space.spec import ModelSpec

# Rules that leave tiny-llama (4 layers) seven layer sets to search: layers 1..3, adjacent allowed.
TINY_RULES = {"rank-one": True, "whole-layers": True, "skip-early": 1, "min-distance": 1}
SMALL_WORKLOAD = {"prefill_tokens": 8, "decode_tokens": 2, "warmup": 0, "repeats": 1}


BASE_ACCURACY = {"dse_arc_easy": 0.6, "dse_piqa": 0.7}
CALLS: list[str] = []  # γ labels evaluated in this process, in order


@dataclass
class FakeLoaded:
    spec: ModelSpec
    fingerprint: str
    name: str


def layer_damage(layer: int) -> float:
    """Accuracy points one fully decomposed layer costs: the first two layers are fatal."""
    return 6.0 if layer < 2 else 1.5 + 0.25 * layer


def expected_drop(spec: ModelSpec, gamma: DecompositionConfig) -> float:
    share = len(gamma.tensor_names(spec)) / spec.n_tensors
    return sum(layer_damage(layer) for layer in gamma.layers) * share


class FakeEvaluator:
    def __init__(self, definition: StudyDefinition, *, progress: bool = False,
                 interrupt_on: int | None = None, sleep: float | None = None) -> None:
        self.loaded = FakeLoaded(spec=load_spec(definition.model), fingerprint=f"fake-{definition.model}",
                                 name=definition.model)
        self.settings: MeasurementSettings = measurement_settings(definition)
        self.evaluations = 0
        self.interrupt_on = interrupt_on
        self.sleep = float(os.environ.get("STUDY_FAKE_SLEEP", "0")) if sleep is None else sleep
        self.baselines = 0

    def memo_key(self) -> str:
        return self.settings.key()

    # The real routing of a trial (memo record re-judged, KL screen, measurement) over the fake's measurements.
    trial = Evaluator.trial

    def rederive(self, record: dict[str, Any], baseline: BaselineRecord, tau: float) -> TrialRecord | None:
        """The fake keeps no per-document results: a stored early stop is measured again."""
        return None if record.get("early_stopped") else TrialRecord.model_validate(record)

    def baseline(self) -> BaselineRecord:
        self.baselines += 1
        tasks = self.settings.tasks
        per_task = {t: BASE_ACCURACY.get(t, 0.5) for t in tasks}
        return BaselineRecord(
            model=self.loaded.name, fingerprint=self.loaded.fingerprint, settings_key=self.settings.accuracy_key(),
            accuracy=sum(per_task.values()) / len(per_task), per_task=per_task,
            accuracy_measurement={"fake": True}, latency_s=0.01, energy_j=0.5, energy_method="fake",
            energy_estimated=True, memory_bytes=10_000, params=self.loaded.spec.total_params,
            versions={"fake": "1"}, seconds=0.0,
        )

    def evaluate(self, gamma: DecompositionConfig, baseline: BaselineRecord, *,
                 tau: float | None = None) -> TrialRecord:
        self.evaluations += 1
        spec = self.loaded.spec
        CALLS.append(gamma.describe(spec))
        log = os.environ.get("STUDY_FAKE_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as handle:  # one short append: atomic across processes
                handle.write(f"{gamma.hash(spec)}\n")
        if self.interrupt_on is not None and self.evaluations == self.interrupt_on:
            raise KeyboardInterrupt
        if self.evaluations == 1:
            _meet_at_barrier()
        if self.sleep:
            time.sleep(self.sleep)
        report = parameter_report(spec, gamma)
        drop = expected_drop(spec, gamma)
        early = tau is not None and self.settings.chunk_size is not None and drop > tau + 2.0
        reduction = report.param_reduction_pct
        latency = energy = None if early else 1.0 - 0.006 * reduction
        per_task: dict[str, Any] = {
            t: TaskRecord(accuracy=acc - drop / 100, baseline_accuracy=acc, drop_pp=drop,
                          ci_low_pp=drop - 1.0, ci_high_pp=drop + 1.0, n_docs=2 if early else 5)
            for t, acc in baseline.per_task.items()
        }
        return TrialRecord(
            gamma=gamma.canonical(spec), gamma_hash=gamma.hash(spec), gamma_label=gamma.describe(spec),
            accuracy=baseline.accuracy - drop / 100, baseline_accuracy=baseline.accuracy, accuracy_drop_pp=drop,
            drop_ci_low_pp=drop - 1.0, drop_ci_high_pp=drop + 1.0, per_task=per_task, early_stopped=early,
            stop_reason="fake early stop" if early else None,
            latency_s=None if early else 0.01 * latency, latency_ratio=latency,
            energy_j=None if early else 0.5 * energy, energy_ratio=energy,
            energy_method=None if early else "fake", energy_estimated=None if early else True,
            edp_ratio=None if early else latency * energy,
            memory_bytes=None if early else int(10_000 * (1 - reduction / 100)),
            memory_ratio=None if early else 1 - reduction / 100,
            params=report.params_after, params_before=report.params_before, param_reduction_pct=reduction,
            decompose_seconds=0.0, evaluate_seconds=0.0, cache_hits=0, cache_misses=0, versions={"fake": "1"},
        )


def _meet_at_barrier() -> None:
    """With ``STUDY_FAKE_BARRIER=DIR:N``, wait until N processes reach their first evaluation.

    Makes "every worker ran a trial" certain, whatever the machine's load.
    """
    spec = os.environ.get("STUDY_FAKE_BARRIER")
    if not spec:
        return
    directory, _, count = spec.rpartition(":")
    Path(directory, str(os.getpid())).touch()
    deadline = time.monotonic() + 120
    while len(list(Path(directory).iterdir())) < int(count) and time.monotonic() < deadline:
        time.sleep(0.05)


def fake_factory(definition: StudyDefinition, *, progress: bool = False) -> FakeEvaluator:
    """``evaluator_factory`` for run_study (picklable: spawned workers import this module)."""
    return FakeEvaluator(definition, progress=progress)


class FakeFactory:
    """An evaluator factory that keeps the evaluators it made (to count their calls)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.made: list[FakeEvaluator] = []

    def __call__(self, definition: StudyDefinition, *, progress: bool = False) -> FakeEvaluator:
        evaluator = FakeEvaluator(definition, progress=progress, **self.kwargs)
        self.made.append(evaluator)
        return evaluator

    @property
    def evaluations(self) -> int:
        return sum(e.evaluations for e in self.made)
