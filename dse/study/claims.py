"""The trial budget: who may start a trial, and how a trial's end settles its slot.

Tables beside Optuna's (prefixed ``dse_``, declared in :mod:`dse.study.claim_tables`;
the study rows, ``dse_studies``, are :mod:`dse.study.study_rows`):

- ``dse_pools``: budgets. Pool ``total`` is the definition's ``n_trials``; every
  ``resume --n-trials M`` opens its own pool of M, so N processes asking at once add
  N × M, and a crashed run's unfinished remainder is not added to it.
- ``dse_trial_claims``: one row per trial slot taken, ``running`` → ``done`` (its trial
  COMPLETE and measured) or ``released`` (FAIL, rejected by the rules, or never started).
- ``dse_trial_holders``: the one claim that runs a trial (``attach`` inserts it).
- ``dse_gamma_claims``: which running claim measures a γ, so a second worker that draws
  it waits for the memo instead of measuring it again.

The protocol (every step one transaction, every transition conditional, so exactly one
process makes it):

1. ``claim``: ``claimed + 1 WHERE claimed < target`` and a running claim row.
2. ``attach``: the claim records the trial number ``ask`` returned (only while running).
3. The trial ends with Optuna's ``tell`` (one transaction in ``RDBStorage``).
4. ``settle``: a running claim whose trial has finished becomes ``done`` or
   ``released`` (``claimed − 1``). Its new state follows from the trial's, so it does not
   matter whether the worker writes it right after ``tell`` or another process does
   after a kill in between.

Invariant: ``claimed`` = running + done claims of the pool, and a done claim's trial is
COMPLETE. So no kill point can run more than ``target`` measured trials, and every slot
whose trial did not complete comes back. Finding dead workers is Optuna's heartbeat
(:mod:`dse.study.reaper`); these tables add only what it lacks: a budget shared by
processes and machines (``optimize(n_trials=…)`` counts per process) and the link
between a slot and its trial.

Every step's transaction sits here beside the invariant it keeps; re-queueing a lost
trial's γ is :mod:`dse.study.requeue`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dse.study.claim_tables import (
    Claim,
    ClaimModel,
    ClaimRow,
    GammaClaimModel,
    PoolModel,
    Transactional,
    TrialHolderModel,
    create_tables,
    insert_or_take_over,
    updated,
)
from dse.study.requeue import Requeues
from dse.study.study_rows import StudyRows

__all__ = ["TOTAL_POOL", "Claim", "Budget", "ClaimRow", "new_pool_name"]

TOTAL_POOL = "total"


def new_pool_name() -> str:
    """A fresh pool for one ``resume --n-trials`` request."""
    return f"more-{uuid.uuid4().hex[:12]}"


class Budget:
    """The budget tables of one database (an SQLAlchemy engine owned by the caller)."""

    def __init__(self, engine: Engine, tables: Transactional, *, create: bool = True) -> None:
        self._transaction = tables.transaction
        if create:
            create_tables(engine)
        self.studies = StudyRows(tables)  # the study's creation lock and sampler streams
        self.requeues = Requeues(tables)  # who queues a lost trial's γ again

    # ---- pools ---------------------------------------------------------------------------

    def set_total(self, study_name: str, n_trials: int, *, done_before: Iterable[int] = ()) -> None:
        """The study has ``n_trials`` measured trials in all: the ``total`` pool's target.

        Trials that ``resume --n-trials`` pools completed count toward it, so ``run`` with a
        larger ``n_trials`` tops the study up to that many (created on first use).

        Args:
            study_name: the study.
            n_trials: measured trials the study should have in all.
            done_before: trial numbers completed before these tables existed; created as
                done claims with the pool, so they count.
        """
        numbers = list(done_before)

        def work(session: Session) -> None:
            elsewhere = int(session.execute(select(func.count()).select_from(ClaimModel).where(
                ClaimModel.study_name == study_name, ClaimModel.pool != TOTAL_POOL, ClaimModel.state == "done",
            )).scalar_one())
            row = session.get(PoolModel, (study_name, TOTAL_POOL))
            if row is None:
                session.add(PoolModel(study_name=study_name, pool=TOTAL_POOL, target=n_trials, claimed=len(numbers)))
                now = time.time()
                for number in numbers:
                    session.add(ClaimModel(study_name=study_name, pool=TOTAL_POOL, trial_number=number,
                                           owner="before-claims", state="done", claimed_at=now))
            else:
                row.target = max(0, n_trials - elsewhere)

        try:
            self._transaction(work)
        except IntegrityError:  # another process created it at the same moment
            self._transaction(work)

    def open_pool(self, study_name: str, n_trials: int) -> str:
        """A new pool of ``n_trials`` for one ``resume --n-trials`` request."""
        pool = new_pool_name()
        def work(session: Session) -> None:
            session.add(PoolModel(study_name=study_name, pool=pool, target=n_trials, claimed=0))

        self._transaction(work)
        return pool

    def pool(self, study_name: str, pool: str) -> tuple[int, int]:
        """``(target, claimed)`` of a pool; claimed counts running and done claims."""

        def work(session: Session) -> tuple[int, int]:
            row = session.get(PoolModel, (study_name, pool))
            return (0, 0) if row is None else (row.target, row.claimed)

        return self._transaction(work)

    # ---- claims --------------------------------------------------------------------------

    def claim(self, study_name: str, pool: str, owner: str) -> Claim | None:
        """Take one slot of ``pool`` atomically; None when it is spent."""

        def work(session: Session) -> Claim | None:
            taken = updated(session, update(PoolModel).where(
                PoolModel.study_name == study_name, PoolModel.pool == pool, PoolModel.claimed < PoolModel.target,
            ).values(claimed=PoolModel.claimed + 1))
            if taken != 1:
                return None
            row = ClaimModel(study_name=study_name, pool=pool, owner=owner, state="running", claimed_at=time.time())
            session.add(row)
            session.flush()
            return Claim(id=row.id, study_name=study_name, pool=pool, owner=owner)

        return self._transaction(work)

    def attach(self, claim: Claim, trial_number: int) -> str:
        """Link the claim to its trial, in one transaction.

        Returns ``"attached"``; ``"released"`` when the claim was meanwhile released as
        stale; ``"taken"`` when another claim holds that trial: Optuna on SQLite can hand
        one queued trial to two processes at once (its ``SELECT … FOR UPDATE`` is a no-op
        there), and the ``dse_trial_holders`` row says which one runs it.
        """

        class _ReleasedError(Exception):
            pass

        def work(session: Session) -> None:
            session.add(TrialHolderModel(study_name=claim.study_name, trial_number=trial_number,
                                         claim_id=claim.id))
            session.flush()
            if updated(session, update(ClaimModel).where(
                    ClaimModel.id == claim.id, ClaimModel.state == "running", ClaimModel.trial_number.is_(None),
            ).values(trial_number=trial_number)) != 1:
                raise _ReleasedError  # rolls the holder row back

        try:
            self._transaction(work)
        except _ReleasedError:
            return "released"
        except IntegrityError:
            return "taken"
        return "attached"

    def end(self, claim_id: int, *, done: bool, note: str = "") -> bool:
        """Settle a running claim: ``done`` keeps its slot, otherwise the slot returns.

        One transaction; False when another process settled it first.
        """
        state = "done" if done else "released"

        def work(session: Session) -> bool:
            row = session.get(ClaimModel, claim_id)
            if row is None:
                return False
            changed = updated(session, update(ClaimModel).where(
                ClaimModel.id == claim_id, ClaimModel.state == "running",
            ).values(state=state, note=note[:512] or None))
            if changed != 1:
                return False
            if not done:
                session.execute(update(PoolModel).where(PoolModel.study_name == row.study_name,
                                                        PoolModel.pool == row.pool)
                                .values(claimed=PoolModel.claimed - 1))
            return True

        return self._transaction(work)

    def running(self, study_name: str, pool: str | None = None) -> list[ClaimRow]:
        """The running claims of a study (of one pool when given)."""

        def work(session: Session) -> list[ClaimRow]:
            query = select(ClaimModel.id, ClaimModel.trial_number, ClaimModel.claimed_at).where(
                ClaimModel.study_name == study_name, ClaimModel.state == "running")
            if pool is not None:
                query = query.where(ClaimModel.pool == pool)
            return [ClaimRow(int(i), n, float(t)) for i, n, t in session.execute(query).all()]

        return self._transaction(work)

    def counts(self, study_name: str, pool: str | None = None) -> dict[str, int]:
        """Claims by state."""

        def work(session: Session) -> dict[str, int]:
            query = select(ClaimModel.state, func.count()).where(ClaimModel.study_name == study_name)
            if pool is not None:
                query = query.where(ClaimModel.pool == pool)
            rows = session.execute(query.group_by(ClaimModel.state)).all()
            return {str(state): int(count) for state, count in rows}

        return self._transaction(work)

    def notes(self, study_name: str) -> dict[int, str]:
        """Why claims ended other than done, by trial number (e.g. a stale worker)."""

        def work(session: Session) -> dict[int, str]:
            rows = session.execute(
                select(ClaimModel.trial_number, ClaimModel.note).where(
                    ClaimModel.study_name == study_name, ClaimModel.trial_number.is_not(None),
                    ClaimModel.state == "released")
            ).all()
            return {int(number): str(note) for number, note in rows if note and number is not None}

        return self._transaction(work)

    # ---- γ in flight ----------------------------------------------------------------------

    def claim_gamma(self, key: str, claim: Claim) -> bool:
        """Whether ``claim`` may measure the γ of ``key`` (no other running claim holds it).

        The caller checks the memo again after True: the previous holder may have stored
        its measurement just before its claim ended.
        """

        def insert(session: Session) -> None:
            session.add(GammaClaimModel(key=key, claim_id=claim.id))

        def take_over(session: Session) -> bool:
            holders = select(ClaimModel.id).where(ClaimModel.state == "running")
            if session.get(GammaClaimModel, key) is None:
                session.add(GammaClaimModel(key=key, claim_id=claim.id))
                return True
            return updated(session, update(GammaClaimModel).where(
                GammaClaimModel.key == key,
                (GammaClaimModel.claim_id == claim.id) | GammaClaimModel.claim_id.not_in(holders),
            ).values(claim_id=claim.id)) == 1

        return insert_or_take_over(self._transaction, insert, take_over)
