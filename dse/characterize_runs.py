"""A study of fixed configurations: enqueue each γ once, run the engine, collect the rows.

The study engine measures what its sampler asks; here every trial is an enqueued γ and
the budget is set to what is queued, so the sampler never invents a point. Running this
again (after Ctrl-C, a kill, or from a second process) queues only the γ that are neither
measured, waiting nor running, so a point is never lost, and a γ the memo knows is
answered from it instead of being measured twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dse.study.api import StudyHandle
from dse.study.definition import StudyDefinition
from dse.study.runner import WorkerStats, default_evaluator_factory, ensure_baseline, prepare, run_workers
from dse.study.storage import retrying
from space.config import DecompositionConfig
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.study.runner import Prepared

__all__ = ["run_fixed_points", "stored_points", "POINT_ATTR", "POINT_HASH_ATTR"]

logger = logging.getLogger("dse.characterize")

POINT_ATTR = "characterize_sweep"
POINT_HASH_ATTR = "characterize_gamma_hash"


def _queue_state(prepared: Prepared, hashes: set[str]) -> tuple[set[str], set[str]]:
    """``(measured, pending)`` γ hashes: COMPLETE trials, and WAITING or RUNNING ones.

    A waiting trial's parameters are not readable before it runs, so each point is
    enqueued with its hash (``POINT_HASH_ATTR``); one the runner queued again after a lost
    trial names that trial (``retry_of``), whose γ was recorded when it started.
    """
    from optuna.trial import TrialState

    measured: set[str] = set()
    pending: set[str] = set()
    trials = retrying(lambda: prepared.study.get_trials(deepcopy=False))
    by_number = {t.number: t for t in trials}
    for trial in trials:
        attrs = trial.user_attrs
        if trial.state == TrialState.COMPLETE and not attrs.get("rejected"):
            if attrs.get("gamma_hash") in hashes:
                measured.add(attrs["gamma_hash"])
        elif trial.state in (TrialState.WAITING, TrialState.RUNNING):
            gamma_hash = attrs.get("gamma_hash") or attrs.get(POINT_HASH_ATTR)
            if gamma_hash is None and attrs.get("retry_of") in by_number:
                original = by_number[attrs["retry_of"]].user_attrs
                gamma_hash = original.get("gamma_hash") or original.get(POINT_HASH_ATTR)
            if gamma_hash is not None:
                pending.add(gamma_hash)
    return measured, pending


def _enqueue_missing(prepared: Prepared, gammas: Sequence[DecompositionConfig], sweep: str) -> int:
    """Queue every γ not measured, waiting or running; returns how many are now waiting."""
    from optuna.trial import TrialState

    spec = prepared.space.spec
    by_hash = {g.hash(spec): g for g in gammas}
    measured, pending = _queue_state(prepared, set(by_hash))
    for gamma_hash, gamma in by_hash.items():
        if gamma_hash in measured or gamma_hash in pending:
            continue
        params = prepared.encoding.encode(gamma)
        if params is None:  # pragma: no cover - the full encoding expresses every uniform γ
            raise InvalidConfigError(f"{gamma.describe(spec)} cannot be expressed as a study trial")
        # Not retried: enqueue_trial spans several transactions (see the runner).
        prepared.study.enqueue_trial(params, user_attrs={POINT_ATTR: sweep, POINT_HASH_ATTR: gamma_hash})
    waiting = retrying(lambda: prepared.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
    return len(waiting)


def _rows_by_hash(handle: StudyHandle) -> dict[str, dict[str, Any]]:
    """The latest COMPLETE, measured trial of each γ: its stored attributes and row."""
    from optuna.trial import TrialState

    from dse.study.queries import trial_row

    rows: dict[str, dict[str, Any]] = {}
    trials = retrying(lambda: handle.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.user_attrs.get("rejected") or trial.user_attrs.get("accuracy_drop_pp") is None:
            continue
        rows[trial.user_attrs["gamma_hash"]] = dict(trial.user_attrs) | trial_row(trial)
    return rows


def stored_points(definition: StudyDefinition) -> tuple[StudyHandle, dict[str, dict[str, Any]]]:
    """The study's measured rows by γ hash, read only (nothing is measured or written).

    Raises:
        UnknownNameError: the study does not exist in the storage (the message lists those that do).
    """
    from dse.study.api import load_study

    handle = load_study(definition.study_name, storage=definition.storage)
    return handle, _rows_by_hash(handle)


def run_fixed_points(definition: StudyDefinition, gammas: Sequence[DecompositionConfig], *, sweep: str,
                     evaluator_factory: Any = None, progress: bool = True,
                     ) -> tuple[StudyHandle, dict[str, dict[str, Any]]]:
    """Measure every γ of ``gammas`` in the study ``definition`` (created or resumed).

    Returns:
        The study's handle and its measured rows by γ hash (``gamma.hash(spec)``).

    Raises:
        DseError: a bad definition or storage, a study of that name with another
            definition, or a γ outside the model.
    """
    prepared = prepare(definition)
    spec = prepared.space.spec
    for gamma in gammas:
        gamma.validate_for(spec)
    stats = WorkerStats(stopped_by="nothing to do")
    try:
        waiting = _enqueue_missing(prepared, gammas, sweep)
        # The budget is what is queued: every waiting γ, nothing the sampler would invent.
        prepared.tables.set_target(definition.study_name, more=waiting)
        target, claimed = prepared.tables.budget(definition.study_name)
        if claimed < target or prepared.tables.running_claims(definition.study_name) > 0:
            factory = evaluator_factory or default_evaluator_factory
            evaluator = factory(definition, progress=progress)
            baseline = ensure_baseline(prepared, evaluator)
            stats = run_workers(prepared, evaluator, baseline, factory=evaluator_factory, progress=progress)
    finally:
        prepared.tables.close()
    handle = StudyHandle(study=prepared.study, definition=definition, target=prepared.target,
                         run_stats=stats, created=prepared.created)
    return handle, _rows_by_hash(handle)
