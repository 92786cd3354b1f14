"""The trial budget: who may start a trial, and how a trial's end settles its slot.

Tables beside Optuna's (prefixed ``dse_``):

- ``dse_studies``: one row per study. Its creation is the lock that makes concurrent
  ``dse study run`` on a fresh database create the study once; it also hands out
  sampler streams, so every worker of every process draws different γ.
- ``dse_pools``: budgets. Pool ``total`` is the definition's ``n_trials``; every
  ``resume --n-trials M`` opens its own pool of M, so N processes asking at once add
  N × M, and a crashed run's unfinished remainder is not added to it.
- ``dse_trial_claims``: one row per trial slot taken, ``running`` → ``done`` (its trial
  COMPLETE and measured) or ``released`` (FAIL, rejected by the rules, or never started).
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

One module because the protocol is one thing: every step's transaction sits beside the
invariant it keeps.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from sqlalchemy import Boolean, Engine, Float, Integer, String, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = ["TOTAL_POOL", "Claim", "Budget", "ClaimRow", "new_pool_name"]

if TYPE_CHECKING:
    from sqlalchemy import CursorResult, Update

TOTAL_POOL = "total"
T = TypeVar("T")


class Transactional(Protocol):
    """Runs one unit of work in one transaction (:meth:`dse.study.memo.EngineTables.transaction`)."""

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction, retried on locks."""
        ...


def _updated(session: Session, statement: Update) -> int:
    """The number of rows an UPDATE changed (``Session.execute`` is typed as a plain ``Result``)."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


class _Base(DeclarativeBase):
    pass


class StudyRowModel(_Base):
    __tablename__ = "dse_studies"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    owner: Mapped[str] = mapped_column(String(256), nullable=False)
    started_at: Mapped[float] = mapped_column(Float, nullable=False)
    ready: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    streams: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class PoolModel(_Base):
    __tablename__ = "dse_pools"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ClaimModel(_Base):
    __tablename__ = "dse_trial_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_name: Mapped[str] = mapped_column(String(512), nullable=False, index=True)
    pool: Mapped[str] = mapped_column(String(64), nullable=False)
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str] = mapped_column(String(256), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    claimed_at: Mapped[float] = mapped_column(Float, nullable=False)
    note: Mapped[str | None] = mapped_column(String(512), nullable=True)


class GammaClaimModel(_Base):
    __tablename__ = "dse_gamma_claims"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    claim_id: Mapped[int] = mapped_column(Integer, nullable=False)


@dataclass(frozen=True)
class Claim:
    """A slot of a pool taken by one worker."""

    id: int
    study_name: str
    pool: str
    owner: str


@dataclass(frozen=True)
class ClaimRow:
    """A running claim as the reaper sees it."""

    id: int
    trial_number: int | None
    claimed_at: float


def new_pool_name() -> str:
    """A fresh pool for one ``resume --n-trials`` request."""
    return f"more-{uuid.uuid4().hex[:12]}"


class Budget:
    """The budget tables of one database (an SQLAlchemy engine owned by the caller)."""

    def __init__(self, engine: Engine, tables: Transactional, *, create: bool = True) -> None:
        from dse.study.storage import creating

        self._transaction = tables.transaction
        if create:
            creating(lambda: _Base.metadata.create_all(engine))

    # ---- the study row: creation lock and sampler streams --------------------------------

    def begin_creation(self, study_name: str, owner: str, *, stale_after: float) -> str:
        """``"create"`` (this process creates the study), ``"ready"`` or ``"wait"``.

        A creator that died before marking the study ready is taken over after
        ``stale_after`` seconds (conditional update: one process takes over).
        """
        now = time.time()

        def insert(session: Session) -> None:
            session.add(StudyRowModel(study_name=study_name, owner=owner, started_at=now, ready=False, streams=0))

        try:
            self._transaction(insert)
            return "create"
        except IntegrityError:
            pass

        def check(session: Session) -> str:
            row = session.get(StudyRowModel, study_name)
            if row is None or row.ready:
                return "ready"
            if row.started_at < now - stale_after:
                taken = _updated(session,
                    update(StudyRowModel).where(StudyRowModel.study_name == study_name,
                                                StudyRowModel.owner == row.owner, StudyRowModel.ready.is_(False))
                    .values(owner=owner, started_at=now))
                return "create" if taken == 1 else "wait"
            return "wait"

        return self._transaction(check)

    def creation_state(self, study_name: str) -> str | None:
        """None (no row: never created here), ``"pending"`` or ``"ready"``."""

        def work(session: Session) -> str | None:
            row = session.get(StudyRowModel, study_name)
            return None if row is None else ("ready" if row.ready else "pending")

        return self._transaction(work)

    def forget(self, study_name: str) -> None:
        """Drop what these tables hold of a study whose Optuna study was deleted, so the name starts anew."""
        from sqlalchemy import delete

        def work(session: Session) -> None:
            gone = cast("CursorResult[Any]", session.execute(delete(StudyRowModel).where(
                StudyRowModel.study_name == study_name, StudyRowModel.ready.is_(True))))
            if gone.rowcount:
                session.execute(delete(PoolModel).where(PoolModel.study_name == study_name))
                session.execute(delete(ClaimModel).where(ClaimModel.study_name == study_name))

        self._transaction(work)

    def mark_ready(self, study_name: str) -> None:
        """The study exists with its definition and seeds (or existed before these tables)."""

        def work(session: Session) -> None:
            row = session.get(StudyRowModel, study_name)
            if row is None:
                session.add(StudyRowModel(study_name=study_name, owner="", started_at=time.time(), ready=True,
                                          streams=0))
            else:
                row.ready = True

        try:
            self._transaction(work)
        except IntegrityError:
            self._transaction(work)

    def next_stream(self, study_name: str) -> int:
        """A number no other worker of this study has drawn (for its sampler seed)."""

        def work(session: Session) -> int:
            session.execute(update(StudyRowModel).where(StudyRowModel.study_name == study_name)
                            .values(streams=StudyRowModel.streams + 1))
            row = session.get(StudyRowModel, study_name)
            return 0 if row is None else int(row.streams)

        return self._transaction(work)

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
            taken = _updated(session, update(PoolModel).where(
                PoolModel.study_name == study_name, PoolModel.pool == pool, PoolModel.claimed < PoolModel.target,
            ).values(claimed=PoolModel.claimed + 1))
            if taken != 1:
                return None
            row = ClaimModel(study_name=study_name, pool=pool, owner=owner, state="running", claimed_at=time.time())
            session.add(row)
            session.flush()
            return Claim(id=row.id, study_name=study_name, pool=pool, owner=owner)

        return self._transaction(work)

    def attach(self, claim: Claim, trial_number: int) -> bool:
        """Link the claim to its trial; False when the claim was meanwhile released as stale."""
        return self._transaction(lambda s: _updated(s, update(ClaimModel).where(
            ClaimModel.id == claim.id, ClaimModel.state == "running", ClaimModel.trial_number.is_(None),
        ).values(trial_number=trial_number))) == 1

    def end(self, claim_id: int, *, done: bool, note: str = "") -> bool:
        """Settle a running claim: ``done`` keeps its slot, otherwise the slot returns.

        One transaction; False when another process settled it first.
        """
        state = "done" if done else "released"

        def work(session: Session) -> bool:
            row = session.get(ClaimModel, claim_id)
            if row is None:
                return False
            changed = _updated(session, update(ClaimModel).where(
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

        try:
            self._transaction(insert)
            return True
        except IntegrityError:
            pass

        def take_over(session: Session) -> bool:
            holders = select(ClaimModel.id).where(ClaimModel.state == "running")
            if session.get(GammaClaimModel, key) is None:
                session.add(GammaClaimModel(key=key, claim_id=claim.id))
                return True
            return _updated(session, update(GammaClaimModel).where(
                GammaClaimModel.key == key,
                (GammaClaimModel.claim_id == claim.id) | GammaClaimModel.claim_id.not_in(holders),
            ).values(claim_id=claim.id)) == 1

        try:
            return self._transaction(take_over)
        except IntegrityError:
            return False
