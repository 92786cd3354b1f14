"""One worker: claim a slot, ask Optuna for γ, check it, measure it (once), tell, settle.

Each loop: reconcile (fail dead workers' trials, settle their slots; :mod:`dse.study.reaper`)
→ claim a slot of the pool (:mod:`dse.study.claims`) → ``study.ask()`` → first heartbeat →
attach the trial to the claim → suggest γ → reject it before measuring if a rule excludes it
→ one call into the memo (:meth:`EngineTables.measure_once`: answer γ from it, wait for the
worker already measuring it, or measure it by :meth:`Evaluator.trial` and store the record)
→ ``study.tell()`` → settle the claim from the trial's state.

Why our own loop and not ``study.optimize``: a rejected γ must not count as a trial of the
budget, and the budget is shared by processes and machines (``optimize(n_trials=…)``
counts per process). The heartbeat is Optuna's (``RDBStorage.record_heartbeat``), run here
in a thread because Optuna starts its own only inside ``optimize``.

One module because it is one loop; the steps it calls live in their own modules.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dse.study.claims import Claim
from dse.study.dashboard import gamma_attrs, record_constraint
from dse.study.encoding import RejectedGamma
from dse.study.feasibility import constraint_for
from dse.study.heartbeat import Heartbeat, worker_seed
from dse.study.memo import worker_owner
from dse.study.progress import Progress
from dse.study.reaper import reconcile, settle_claim
from dse.study.rejections import tell_rejected
from dse.study.requeue import requeue_pending
from dse.study.samplers import make_sampler
from dse.study.search_space import check_gamma
from dse.study.storage import retrying
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import optuna

    from dse.evaluation import BaselineRecord, Evaluator
    from dse.study.lifecycle import Prepared
    from space.config import DecompositionConfig

__all__ = ["WorkerStats", "Worker", "MAX_REJECTIONS_IN_A_ROW"]

logger = logging.getLogger("dse.study")

# The full encoding may propose γ after γ that the rules exclude; give up after this many.
MAX_REJECTIONS_IN_A_ROW = 2000
_REJECTED, _DONE, _LOST = "rejected", "done", "lost"
STAT_FIELDS = ("evaluated", "memoized", "rejected", "early_stopped", "failed", "reaped")


@dataclass
class WorkerStats:
    """What one worker (or, merged, every worker of a run) did."""

    evaluated: int = 0
    memoized: int = 0
    rejected: int = 0
    early_stopped: int = 0
    failed: int = 0
    reaped: int = 0
    stopped_by: str = "budget"

    def merge(self, other: WorkerStats) -> None:
        """Add another worker's counts."""
        for name in STAT_FIELDS:
            setattr(self, name, getattr(self, name) + getattr(other, name))


class Worker:
    """Runs trials of one prepared study with one evaluator until its pool is spent."""

    def __init__(self, prepared: Prepared, evaluator: Evaluator, baseline: BaselineRecord, *,
                 progress: bool = True) -> None:
        self.p = prepared
        self.evaluator = evaluator
        self.baseline = baseline
        self.owner = worker_owner()
        self.fingerprint = evaluator.loaded.fingerprint
        self.settings_key = evaluator.memo_key()
        self.stats = WorkerStats()
        self.progress = Progress(prepared, enabled=progress)
        self.kl_screen: Any = None  # dse.screen.StudyScreen, when the definition screens
        self._next_reconcile = 0.0  # while waiting for another worker's measurement of the same γ
        definition = prepared.definition
        self.study_id = retrying(lambda: prepared.storage.get_study_id_from_name(definition.study_name))
        stream = prepared.tables.budget.studies.next_stream(definition.study_name)
        prepared.study.sampler = make_sampler(
            definition.search.sampler, seed=worker_seed(definition.search.seed, stream), n_trials=definition.n_trials,
            n_startup_trials=definition.search.n_startup_trials, multi_objective=prepared.goal.multi_objective,
        )

    # ---- the loop ---------------------------------------------------------------------

    def run(self) -> WorkerStats:
        """Claim and run trials until the pool is spent, the timeout passes, or an error."""
        definition, budget = self.p.definition, self.p.tables.budget
        name = definition.study_name
        deadline = time.monotonic() + definition.timeout if definition.timeout else math.inf
        rejections = 0
        self.progress.open()
        try:
            while True:
                if time.monotonic() >= deadline:
                    self.stats.stopped_by = "timeout"
                    break
                self.stats.reaped += reconcile(self.p.study, budget, definition.grace_seconds).failed
                claim = budget.claim(name, self.p.pool, self.owner)
                if claim is None:
                    if not budget.running(name, self.p.pool):
                        break
                    # Others still hold slots: wait, and take over any whose worker died.
                    self.progress.status("waiting for other workers")
                    time.sleep(min(1.0, definition.heartbeat_interval))
                    continue
                outcome = self._one(claim)
                rejections = rejections + 1 if outcome == _REJECTED else 0
                if rejections >= MAX_REJECTIONS_IN_A_ROW:
                    raise InvalidConfigError(
                        f"encoding {definition.search.encoding!r} proposed {rejections} γ in a row that the "
                        f"rules exclude; use encoding = \"gaps\", which satisfies them by construction"
                    )
        finally:
            self.progress.close()
        return self.stats

    def _one(self, claim: Claim) -> str:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        budget, study, storage = self.p.tables.budget, self.p.study, self.p.storage
        trial = None
        trial_id = -1
        try:
            # Not retried: ask creates the trial row and then writes its parameters; repeating
            # it could leave an orphan RUNNING trial (the reaper would fail it after the grace).
            trial = study.ask()
            trial_id = retrying(lambda: storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number))
            # The first beat before attaching: a kill between the two leaves a trial Optuna finds stale.
            retrying(lambda: storage.record_heartbeat(trial_id))
            attached = budget.attach(claim, trial.number)
            if attached == "taken":
                # Another worker was handed the same queued trial and runs it: give this slot back.
                budget.end(claim.id, done=False, note=f"trial {trial.number} runs under another claim")
                return _LOST
            if attached == "released":
                # A lock wait longer than the grace period: the slot was released meanwhile.
                if retrying(lambda: storage.get_trial(trial_id)).state == TrialState.RUNNING:
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    self._requeue(trial.number)
                return _LOST
            trial.set_user_attr("worker", self.owner)  # `show` says which process runs it
            with Heartbeat(storage, trial_id, self.p.definition.heartbeat_interval):
                outcome = self._measure(trial, claim)
        except UpdateFinishedTrialError:
            # Another process's reaper failed this trial (a stall longer than the grace period)
            # and queued its γ again: leave it, and settle the slot from the trial's state.
            logger.warning("trial %s was failed as stale by another worker; its γ is queued again",
                           getattr(trial, "number", "?"))
            settle_claim(budget, claim.id, retrying(lambda: storage.get_trial(trial_id)))
            return _LOST
        except BaseException as exc:
            self._failed(claim, trial, trial_id, exc)
            raise
        settle_claim(budget, claim.id, retrying(lambda: storage.get_trial(trial_id)))
        self.progress.advance()
        return outcome

    def _requeue(self, number: int) -> None:
        """Queue the γ of a trial this worker gave up (interrupted, or its slot lost) again.

        A kill before it is done leaves the trial pending for the next reconcile (:mod:`dse.study.requeue`).
        """
        requeue_pending(self.p.study, self.p.tables.budget.requeues, self.p.definition.grace_seconds,
                        self.owner, only=number)

    def _failed(self, claim: Claim, trial: optuna.trial.Trial | None, trial_id: int, exc: BaseException) -> None:
        """Record a trial that raised (or was interrupted) as FAIL and give its slot back."""
        from optuna.trial import TrialState

        interrupted = isinstance(exc, KeyboardInterrupt)
        if interrupted:  # Ctrl-C, or the parent of a spawned worker died (processes.die_with_parent)
            reason = f"interrupted ({exc})" if str(exc) else "interrupted (Ctrl-C)"
        else:
            reason = f"{type(exc).__name__}: {exc}"
        self.stats.failed += 1
        try:
            if trial is not None:
                trial.set_user_attr("fail_reason", reason[:500])
                self.p.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                if interrupted:
                    self._requeue(trial.number)
            self.p.tables.budget.end(claim.id, done=False, note=reason)
        except BaseException as cleanup:  # noqa: BLE001 - the original error matters more
            logger.warning("could not record the end of trial %s: %s (the next run's reaper will)",
                           getattr(trial, "number", "?"), cleanup)

    def _waiting(self) -> None:
        """Between looks for another worker's measurement of the same γ: say so; settle its claim if it died."""
        self.progress.status("waiting for another worker measuring the same γ")
        if time.monotonic() > self._next_reconcile:
            self.stats.reaped += reconcile(self.p.study, self.p.tables.budget, self.p.definition.grace_seconds).failed
            self._next_reconcile = time.monotonic() + 1.0

    def _measure(self, trial: optuna.trial.Trial, claim: Claim) -> str:
        from optuna.trial import TrialState

        space, definition, goal = self.p.space, self.p.definition, self.p.goal
        spec = space.spec
        started = time.perf_counter()
        gamma: DecompositionConfig | None
        try:
            gamma = suggested = self.p.encoding.suggest(trial)
            reason = check_gamma(space, suggested)
        except RejectedGamma as rejected:
            gamma, reason = None, rejected.reason
        if reason is not None:
            tell_rejected(self.p.study, trial, self.p.space.spec, self.p.goal.metrics, gamma, reason)
            self.stats.rejected += 1
            return _REJECTED
        assert gamma is not None
        label = gamma.describe(spec)
        gamma_hash = gamma.hash(spec)
        self.progress.status(label)
        trial.set_user_attr("gamma", gamma.canonical(spec))
        trial.set_user_attr("gamma_hash", gamma_hash)
        trial.set_user_attr("gamma_label", label)
        for key, value in gamma_attrs(gamma.canonical(spec), spec, definition.evaluation.method).items():
            trial.set_user_attr(key, value)
        self._next_reconcile = time.monotonic() + 1.0
        outcome, entry = self.p.tables.measure_once(
            self.fingerprint, self.settings_key, gamma_hash, claim,
            lambda stored: self.evaluator.trial(gamma, self.baseline, tau=definition.tau, stored=stored,
                                                screen=self._screen_decision if definition.screen else None),
            tau=definition.tau, study_name=definition.study_name, waiting=self._waiting)
        if outcome.screen is not None and outcome.screen.skip:  # the KL screen (dse/screen.py) skipped γ
            from dse.screen import tell_screened
            from space.metrics import parameter_report

            reduction = parameter_report(spec, gamma).param_reduction_pct
            tell_screened(self.p.study, trial, outcome.screen, self.p.goal.metrics, reduction)
            return _DONE
        assert outcome.record is not None
        record = outcome.record
        memoized = outcome.source == "memo"
        if memoized and entry is not None:
            trial.set_user_attr("memo_study", entry.study_name)
            self.stats.memoized += 1
        else:
            self.stats.evaluated += 1
        if record.get("early_stopped"):
            self.stats.early_stopped += 1
        values, standins = goal.values(record)
        standins = {**(record.get("standins") or {}), **standins}
        constraint = constraint_for(record, definition.tau, definition.evaluation.feasibility)
        record_constraint(trial, constraint)
        for key, value in record.items():
            if key not in ("gamma", "gamma_hash", "gamma_label", "per_doc", "standins"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("memoized", memoized)
        trial.set_user_attr("rejected", False)
        trial.set_user_attr("feasible", constraint <= 0)
        trial.set_user_attr("tau", definition.tau)
        if standins:
            trial.set_user_attr("standins", standins)
        trial.set_user_attr("trial_seconds", time.perf_counter() - started)
        # skip_if_finished: a stalled worker whose trial was meanwhile failed as stale (and its
        # γ queued again) must not crash on telling a finished trial; its record is memoized.
        retrying(lambda: self.p.study.tell(trial, values, state=TrialState.COMPLETE, skip_if_finished=True))
        return _DONE

    def _screen_decision(self, gamma: DecompositionConfig) -> Any:
        """The KL screen's decision for γ (dse/screen.py); built on the worker's first use."""
        from dse.screen import StudyScreen
        from space.env import resolve_data_dir

        if self.kl_screen is None:
            data_dir = resolve_data_dir(self.p.definition.evaluation.data_dir)
            if data_dir is None:
                raise InvalidConfigError("the KL screen needs the benchmark data directory (wikitext2/)")
            self.kl_screen = StudyScreen(self.evaluator, data_dir, self.p.definition.tau)
        return self.kl_screen.check(gamma, retrying(lambda: self.p.study.get_trials(deepcopy=False)))
