"""Finding trials whose worker died, and settling the budget slots they held.

Optuna does most of it: ``RDBStorage(heartbeat_interval, grace_period)`` plus
``optuna.storages.fail_stale_trials`` fail a RUNNING trial whose heartbeat stopped. What
it lacks, and :func:`reconcile` adds:

- A trial killed between ``ask`` and its first heartbeat has no heartbeat row, and
  Optuna never finds it stale. Here: a RUNNING trial that no running claim holds and
  that started more than ``grace_period`` ago is failed the same way.
- Queueing the failed trial's γ again survives a kill between failing and queueing
  (Optuna's ``RetryHeartbeatStaleTrialCallback`` runs after the fail, in another
  transaction, and is lost with the process): :mod:`dse.study.requeue` derives what is
  still to queue from the stored trials, so the storage gets no stale-trial callback.
- Optuna knows nothing of the budget: a claim whose trial has finished is settled from
  the trial's state (:meth:`dse.study.claims.Budget.end`), and a claim that never got a
  trial is released after ``grace_period``.

Every step is conditional and derived from stored state, so a kill at any point inside
the reaper leaves nothing that the next reconcile (of any process) does not finish.
"""

from __future__ import annotations

import datetime
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dse.study.requeue import requeue_pending
from dse.study.storage import retrying

if TYPE_CHECKING:
    import optuna

    from dse.study.claims import Budget

__all__ = ["Reaped", "reconcile", "settle_claim"]

logger = logging.getLogger("dse.study")


@dataclass
class Reaped:
    """What one reconcile did."""

    failed: int = 0  # trials failed here (their worker died)
    requeued: int = 0  # γ of failed trials queued again here
    released: int = 0  # slots returned to their pool


def _is_measured(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.state.name == "COMPLETE" and not trial.user_attrs.get("rejected", False)


def settle_claim(budget: Budget, claim_id: int, trial: optuna.trial.FrozenTrial | None, note: str = "") -> bool:
    """End a running claim from its trial's state; False while the trial still runs."""
    if trial is not None and trial.state.name in ("RUNNING", "WAITING"):
        return False
    if trial is not None and _is_measured(trial):
        return budget.end(claim_id, done=True)
    if not note:
        note = "rejected by the rules" if trial is not None and trial.state.name == "COMPLETE" else "trial failed"
    return budget.end(claim_id, done=False, note=note)


def _fail_orphans(study: optuna.Study, budget: Budget, grace: float,
                  trials: list[optuna.trial.FrozenTrial]) -> int:
    """Fail RUNNING trials that no claim holds and that never beat (killed right after ``ask``)."""
    from optuna.trial import TrialState

    held = {c.trial_number for c in budget.running(study.study_name) if c.trial_number is not None}
    cutoff = datetime.datetime.now() - datetime.timedelta(seconds=grace)
    failed = 0
    for trial in trials:
        if trial.state != TrialState.RUNNING or trial.number in held:
            continue
        if trial.datetime_start is None or trial.datetime_start > cutoff:
            continue
        try:
            retrying(functools.partial(study.tell, trial.number, state=TrialState.FAIL))
        except (ValueError, RuntimeError):
            continue  # finished meanwhile (another reaper or its late worker)
        logger.warning("trial %d lost its worker before its first heartbeat: marked FAIL, queued again",
                       trial.number)
        failed += 1
    return failed


def reconcile(study: optuna.Study, budget: Budget, grace: float) -> Reaped:
    """Fail the trials of dead workers, queue their γ again, and settle every claim whose trial has ended."""
    import optuna

    from dse.study.memo import worker_owner

    reaped = Reaped()
    before = {t.number for t in retrying(lambda: study.get_trials(deepcopy=False, states=(
        optuna.trial.TrialState.RUNNING,)))}
    retrying(lambda: optuna.storages.fail_stale_trials(study))
    trials = retrying(lambda: study.get_trials(deepcopy=False))
    by_number = {t.number: t for t in trials}
    for number in sorted(before):
        if by_number[number].state.name == "FAIL" and "fail_reason" not in by_number[number].user_attrs:
            reaped.failed += 1
            logger.warning("trial %d lost its worker (no heartbeat): marked FAIL, its γ queued again", number)
    reaped.failed += _fail_orphans(study, budget, grace, trials)
    if reaped.failed:
        trials = retrying(lambda: study.get_trials(deepcopy=False))
    # Every pending re-queue, not only this call's: a reaper killed after failing a trial left its γ to us.
    reaped.requeued = requeue_pending(study, budget.requeues, grace, worker_owner(), trials)
    by_number = {t.number: t for t in trials}
    now = time.time()
    for claim in budget.running(study.study_name):
        if claim.trial_number is None:
            if claim.claimed_at < now - grace and budget.end(
                    claim.id, done=False, note=f"no trial started within {grace:.0f} s (process killed?)"):
                reaped.released += 1
            continue
        trial = by_number.get(claim.trial_number)
        if trial is None:
            # Attached to a trial created after the snapshot above: it is running or has just
            # ended; its worker (or a later reconcile) settles it. Settling it here from "no
            # trial" would release a live slot and let the budget run one trial over.
            continue
        note = ""
        if trial.state.name == "FAIL" and not trial.user_attrs.get("fail_reason"):
            note = f"stale: no heartbeat for {grace:.0f} s (process killed?)"
        if settle_claim(budget, claim.id, trial, note) and not _is_measured(trial):
            reaped.released += 1
    return reaped
