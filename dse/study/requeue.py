"""Queueing a lost trial's γ again: exactly once, whichever process dies at whichever step.

A trial whose worker died (failed by a reaper: no heartbeat, or none ever) or was
interrupted (Ctrl-C, its parent died) failed through no fault of its γ, so the γ is queued
again and the next worker measures it (or answers it from the memo). Optuna's
``fail_stale_trials`` with a ``RetryHeartbeatStaleTrialCallback`` fails the trial and
queues it in two transactions: a kill between them loses the γ for good. Here the
re-queue is derived from stored state instead, so whoever comes next finishes it:

- *Pending*: a FAIL trial with no ``fail_reason`` (failed by a reaper) or one that says
  "interrupted", whose number no other trial names as the one it retries (Optuna's
  ``retry_history``, or ``retry_of`` for an interrupted one), within ``MAX_RETRY``.
- *One process queues it*: it first takes the trial's row in ``dse_requeues`` (an insert,
  or a conditional takeover when the holder died before queueing: at once when it was a
  process of this machine, after the grace period otherwise), then checks again that the
  trial is still pending.
- *Queueing is one transaction* (Optuna's ``add_trial``) and the queued trial names the
  trial it retries, so once it exists the trial is no longer pending.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from dse.study.claim_tables import RequeueModel, Transactional, insert_or_take_over, updated
from dse.study.storage import retrying

if TYPE_CHECKING:
    import optuna

__all__ = ["MAX_RETRY", "Requeues", "is_pending", "queued_numbers", "requeue_pending"]

# A γ whose process dies every time (out of memory, say) is retried this often, then left FAIL.
MAX_RETRY = 3


def queued_numbers(trials: Iterable[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials that another trial retries (they are queued again already)."""
    numbers: set[int] = set()
    for trial in trials:
        numbers.update(int(n) for n in trial.system_attrs.get("retry_history", []))
        if trial.user_attrs.get("retry_of") is not None:
            numbers.add(int(trial.user_attrs["retry_of"]))
    return numbers


def _interrupted(trial: optuna.trial.FrozenTrial) -> bool:
    return str(trial.user_attrs.get("fail_reason", "")).startswith("interrupted")


def is_pending(trial: optuna.trial.FrozenTrial, queued: set[int]) -> bool:
    """Whether ``trial`` failed through no fault of its γ and is not queued again yet."""
    if trial.state.name != "FAIL" or trial.number in queued:
        return False
    if _interrupted(trial):
        return True
    lost = "fail_reason" not in trial.user_attrs
    return lost and len(trial.system_attrs.get("retry_history", [])) < MAX_RETRY


class Requeues:
    """The ``dse_requeues`` rows: which process queues which lost trial (tables made by ``Budget``)."""

    def __init__(self, tables: Transactional) -> None:
        self._transaction = tables.transaction

    def take(self, study_name: str, number: int, owner: str, *, stale_after: float) -> bool:
        """Whether this process queues trial ``number`` again (no live process is doing it)."""
        now = time.time()

        def insert(session: Session) -> None:
            session.add(RequeueModel(study_name=study_name, trial_number=number, owner=owner, taken_at=now))

        def take_over(session: Session) -> bool:
            row = session.get(RequeueModel, (study_name, number))
            if row is None:
                return False
            if row.owner != owner and row.taken_at >= now - stale_after and not _holder_gone(row.owner):
                return False
            return updated(session, update(RequeueModel).where(
                RequeueModel.study_name == study_name, RequeueModel.trial_number == number,
                RequeueModel.owner == row.owner).values(owner=owner, taken_at=now)) == 1

        return insert_or_take_over(self._transaction, insert, take_over)


def _holder_gone(owner: str) -> bool:
    """Whether ``owner`` (``host:pid:…``, see ``worker_owner``) is a process of this machine that is gone.

    Such a holder is taken over at once; one on another machine only after the grace period.
    """
    import os
    import socket

    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def _queue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue ``trial``'s γ again in one transaction, naming the trial it retries."""
    import optuna

    if _interrupted(trial):
        # Not the γ's fault, so not counted against MAX_RETRY: the next run measures it first.
        params = dict(trial.params) or dict(trial.system_attrs.get("fixed_params", {}))
        attrs: dict[str, Any] = {"retry_of": trial.number}
        if trial.user_attrs.get("paper_seed"):
            attrs["paper_seed"] = trial.user_attrs["paper_seed"]
        study.enqueue_trial(params, user_attrs=attrs)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Optuna's own retry: keeps the parameters (or a paper seed's fixed_params) and the retry history.
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, trial)


def requeue_pending(study: optuna.Study, requeues: Requeues, grace: float, owner: str,
                    trials: list[optuna.trial.FrozenTrial] | None = None, *, only: int | None = None) -> int:
    """Queue again every pending trial (or trial ``only``); returns how many this process queued."""
    if trials is None:
        trials = retrying(lambda: study.get_trials(deepcopy=False))
    queued = queued_numbers(trials)
    done = 0
    for trial in trials:
        if (only is not None and trial.number != only) or not is_pending(trial, queued):
            continue
        if not requeues.take(study.study_name, trial.number, owner, stale_after=grace):
            continue  # another live process is queueing it
        # Checked again: the previous holder may have queued it after our first read.
        fresh = retrying(lambda: study.get_trials(deepcopy=False))
        if not is_pending(next(t for t in fresh if t.number == trial.number), queued_numbers(fresh)):
            continue
        # Not retried: add_trial is one transaction, but a repeat after a late lock error
        # could queue the γ twice; SQLite's busy timeout already waits for the lock.
        _queue(study, trial)
        done += 1
    return done

