"""The tables beside Optuna's that the budget protocol keeps (prefixed ``dse_``), and their rows.

- ``dse_studies``: one row per study: the creation lock and the sampler streams
  (:mod:`dse.study.study_rows`).
- ``dse_pools``: budgets; ``dse_trial_claims``: one row per trial slot taken;
  ``dse_trial_holders``: the one claim that runs a trial;
  ``dse_gamma_claims``: which running claim measures a γ (:mod:`dse.study.claims`).
- ``dse_requeues``: which process queues a lost trial's γ again (:mod:`dse.study.requeue`).

Only declarations live here, so the modules that run the protocol's steps share one
metadata (one ``create_all``) without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from sqlalchemy import Boolean, Engine, Float, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

if TYPE_CHECKING:
    from sqlalchemy import CursorResult, Delete, Update

__all__ = [
    "Transactional", "updated", "insert_or_take_over", "create_tables", "StudyRowModel", "PoolModel",
    "ClaimModel", "GammaClaimModel", "TrialHolderModel", "RequeueModel", "Claim", "ClaimRow",
]

T = TypeVar("T")


class Transactional(Protocol):
    """Runs one unit of work in one transaction (:meth:`dse.study.memo.EngineTables.transaction`)."""

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction, retried on locks."""
        ...


def updated(session: Session, statement: Update | Delete) -> int:
    """The number of rows an UPDATE or DELETE changed (``Session.execute`` is typed as a plain ``Result``)."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


def insert_or_take_over(transaction: Callable[[Callable[[Session], Any]], Any],
                        insert: Callable[[Session], None], take_over: Callable[[Session], bool]) -> bool:
    """Hold a row: insert it, or, when it exists, ``take_over`` it in a second transaction.

    Each step is its own transaction, so a kill between them leaves either no row of
    ours or a whole one. The take-over losing a race to a concurrent insert is False.
    """
    from sqlalchemy.exc import IntegrityError

    try:
        transaction(insert)
        return True
    except IntegrityError:
        pass
    try:
        return bool(transaction(take_over))
    except IntegrityError:
        return False


class Base(DeclarativeBase):
    pass


def create_tables(engine: Engine) -> None:
    """Create the ``dse_`` budget tables that are missing (safe when processes race)."""
    from dse.study.storage import creating

    creating(lambda: Base.metadata.create_all(engine))


class StudyRowModel(Base):
    """A study's creation lock (owner, readiness) and its sampler-stream counter."""

    __tablename__ = "dse_studies"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    owner: Mapped[str] = mapped_column(String(256), nullable=False)
    started_at: Mapped[float] = mapped_column(Float, nullable=False)
    ready: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    streams: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class PoolModel(Base):
    """A budget: ``target`` slots, ``claimed`` of them running or done."""

    __tablename__ = "dse_pools"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ClaimModel(Base):
    """One trial slot taken from a pool, and the trial that uses it."""

    __tablename__ = "dse_trial_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_name: Mapped[str] = mapped_column(String(512), nullable=False, index=True)
    pool: Mapped[str] = mapped_column(String(64), nullable=False)
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str] = mapped_column(String(256), nullable=False)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    claimed_at: Mapped[float] = mapped_column(Float, nullable=False)
    note: Mapped[str | None] = mapped_column(String(512), nullable=True)


class TrialHolderModel(Base):
    """The one claim that runs a trial: a second claim handed the same trial cannot attach to it."""

    __tablename__ = "dse_trial_holders"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    trial_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    claim_id: Mapped[int] = mapped_column(Integer, nullable=False)


class GammaClaimModel(Base):
    """The running claim that measures a γ (key: model, settings and γ hashes)."""

    __tablename__ = "dse_gamma_claims"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    claim_id: Mapped[int] = mapped_column(Integer, nullable=False)


class RequeueModel(Base):
    """The process queueing a lost trial's γ again, and since when."""

    __tablename__ = "dse_requeues"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    trial_number: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(256), nullable=False)
    taken_at: Mapped[float] = mapped_column(Float, nullable=False)


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
