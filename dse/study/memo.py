"""The engine's own tables beside Optuna's, in the same database, all prefixed ``dse_``.

- ``dse_schema``: the schema version, stamped when the tables are created. A database
  written by a newer lowrank-dse is refused with the upgrade to make.
- ``dse_memo``: every γ measured, keyed by (model fingerprint, measurement-settings key,
  γ hash). A γ already measured under the same model and settings is answered from here
  in any study of the database, and the trial says ``memoized = True``.
- ``dse_baselines``: the original model's measurement per (fingerprint, settings key),
  so a second study on the same model and tasks does not measure it again.
- ``dse_budgets`` and ``dse_claims``: the trial budget of each study and one claim per
  trial a worker runs. A worker takes a slot with one conditional ``UPDATE`` (atomic on
  SQLite, PostgreSQL and MySQL), so several workers never run more trials than asked.
  A claim carries a heartbeat; a claim whose heartbeat stopped (its process was killed)
  is found stale, its trial marked FAIL, and its slot given back.

Every transaction goes through :meth:`EngineTables.transaction`, retried while SQLite
reports a lock.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sqlalchemy import (
    Boolean,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dse.study.storage import StorageTarget, engine_kwargs, retrying
from space.errors import StorageError

if TYPE_CHECKING:
    from sqlalchemy import CursorResult, Update

__all__ = [
    "SCHEMA_VERSION",
    "EngineTables",
    "MemoEntry",
    "Claim",
    "SchemaModel",
    "MemoModel",
    "BaselineModel",
    "BudgetModel",
    "ClaimModel",
]

SCHEMA_VERSION = 1
T = TypeVar("T")


class _Base(DeclarativeBase):
    pass


class SchemaModel(_Base):
    """The schema version of the ``dse_*`` tables, written once."""

    __tablename__ = "dse_schema"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)
    package_version: Mapped[str] = mapped_column(String(64), nullable=False)


class MemoModel(_Base):
    """A measured γ under (fingerprint, settings key): answers the same γ in any study."""

    __tablename__ = "dse_memo"

    fingerprint: Mapped[str] = mapped_column(String(128), primary_key=True)
    settings_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    gamma_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    gamma_label: Mapped[str] = mapped_column(String(512), nullable=False)
    early_stopped: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # τ under which an early stop was decided: the record answers any τ ≤ this one.
    tau: Mapped[float | None] = mapped_column(Float, nullable=True)
    record: Mapped[str] = mapped_column(Text, nullable=False)
    study_name: Mapped[str] = mapped_column(String(512), nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class BaselineModel(_Base):
    """The baseline record of a model under one settings key."""

    __tablename__ = "dse_baselines"

    fingerprint: Mapped[str] = mapped_column(String(128), primary_key=True)
    settings_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    record: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[float] = mapped_column(Float, nullable=False)


class BudgetModel(_Base):
    """A study's trial budget and how many trials workers have claimed of it."""

    __tablename__ = "dse_budgets"

    study_name: Mapped[str] = mapped_column(String(512), primary_key=True)
    target: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)


class ClaimModel(_Base):
    """One worker's claim on one trial, kept alive by its heartbeat."""

    __tablename__ = "dse_claims"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_name: Mapped[str] = mapped_column(String(512), nullable=False, index=True)
    trial_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    owner: Mapped[str] = mapped_column(String(256), nullable=False)
    # running -> done | released (rejected γ, failure, Ctrl-C) | stale (heartbeat stopped)
    state: Mapped[str] = mapped_column(String(16), nullable=False, index=True)
    claimed_at: Mapped[float] = mapped_column(Float, nullable=False)
    heartbeat_at: Mapped[float] = mapped_column(Float, nullable=False)
    note: Mapped[str | None] = mapped_column(String(512), nullable=True)


@dataclass(frozen=True)
class MemoEntry:
    """A memo answer: the stored record and where and how it was measured."""

    record: dict[str, Any]
    study_name: str
    early_stopped: bool
    tau: float | None


@dataclass(frozen=True)
class Claim:
    """A claim a worker holds (its row id, study and owner)."""

    id: int
    study_name: str
    owner: str


def _updated(session: Session, statement: Update) -> int:
    """The number of rows an UPDATE changed (``Session.execute`` is typed as a plain ``Result``)."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lowrank-dse")
    except PackageNotFoundError:
        return "unknown"


def worker_owner() -> str:
    """``host:pid:random``: unique per worker process, readable in ``show``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class EngineTables:
    """Access to the ``dse_`` tables of one database."""

    def __init__(self, target: StorageTarget) -> None:
        self.target = target
        self.engine = create_engine(target.url, **engine_kwargs(target))
        try:
            retrying(lambda: _Base.metadata.create_all(self.engine))
            retrying(self._stamp_or_check_version)
        except StorageError:
            raise
        except Exception as exc:
            from sqlalchemy.exc import SQLAlchemyError

            if isinstance(exc, SQLAlchemyError):
                raise StorageError(f"cannot open the dse tables of {target.display()!r}: {exc}") from None
            raise

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with Session(self.engine) as session, session.begin():
            yield session

    def transaction(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in one transaction (commit, or rollback on error), retried on locks."""

        def once() -> T:
            with self._session() as session:
                return work(session)

        return retrying(once)

    def _stamp_or_check_version(self) -> None:
        with self._session() as session:
            row = session.get(SchemaModel, 1)
            if row is None:
                try:
                    with session.begin_nested():
                        session.add(SchemaModel(id=1, version=SCHEMA_VERSION, created_at=time.time(),
                                                package_version=_package_version()))
                except IntegrityError:
                    row = session.get(SchemaModel, 1)
            if row is not None and row.version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.target.display()!r} holds dse tables of schema {row.version} (written by lowrank-dse "
                    f"{row.package_version}); this lowrank-dse reads schema {SCHEMA_VERSION}: upgrade with "
                    f"`pip install -U lowrank-dse`"
                )

    def schema_version(self) -> int:
        return self.transaction(lambda s: s.get(SchemaModel, 1).version)  # type: ignore[union-attr]

    # ---- memo -------------------------------------------------------------------------

    def memo_get(self, fingerprint: str, settings_key: str, gamma_hash: str, *, tau: float | None) -> MemoEntry | None:
        """A stored measurement of γ valid for ``tau``, or None.

        ``tau=None``: the measurement whatever its decision (the caller re-derives the
        decision from its per-document results, see ``Evaluator.rederive``). Otherwise a
        full measurement answers any τ, and an early-stopped one only a τ at most its own.
        """

        def work(session: Session) -> MemoEntry | None:
            row = session.get(MemoModel, (fingerprint, settings_key, gamma_hash))
            if row is None:
                return None
            if tau is not None and row.early_stopped and (row.tau is None or tau > row.tau):
                return None
            return MemoEntry(record=json.loads(row.record), study_name=row.study_name,
                             early_stopped=row.early_stopped, tau=row.tau)

        return self.transaction(work)

    def memo_put(self, fingerprint: str, settings_key: str, record: dict[str, Any], *, tau: float | None,
                 study_name: str) -> None:
        """Store a measurement; a full one replaces an early-stopped one, never the reverse."""
        early = bool(record.get("early_stopped"))

        def work(session: Session) -> None:
            key = (fingerprint, settings_key, str(record["gamma_hash"]))
            row = session.get(MemoModel, key)
            payload = json.dumps(record, default=str)
            if row is None:
                session.add(MemoModel(
                    fingerprint=fingerprint, settings_key=settings_key, gamma_hash=str(record["gamma_hash"]),
                    gamma_label=str(record.get("gamma_label", ""))[:512], early_stopped=early,
                    tau=tau if early else None, record=payload, study_name=study_name, created_at=time.time(),
                ))
            elif row.early_stopped and (not early or (tau is not None and row.tau is not None and tau > row.tau)):
                row.early_stopped, row.tau, row.record = early, (tau if early else None), payload
                row.study_name, row.created_at = study_name, time.time()

        # Another worker may store the same γ at the same moment; theirs is as good.
        with suppress(IntegrityError):
            self.transaction(work)

    def memo_count(self, fingerprint: str | None = None) -> int:
        from sqlalchemy import func

        def work(session: Session) -> int:
            query = select(func.count()).select_from(MemoModel)
            if fingerprint is not None:
                query = query.where(MemoModel.fingerprint == fingerprint)
            return int(session.execute(query).scalar_one())

        return self.transaction(work)

    # ---- baselines --------------------------------------------------------------------

    def baseline_get(self, fingerprint: str, settings_key: str) -> dict[str, Any] | None:
        def work(session: Session) -> dict[str, Any] | None:
            row = session.get(BaselineModel, (fingerprint, settings_key))
            return None if row is None else json.loads(row.record)

        return self.transaction(work)

    def baseline_put(self, fingerprint: str, settings_key: str, record: dict[str, Any]) -> None:
        def work(session: Session) -> None:
            if session.get(BaselineModel, (fingerprint, settings_key)) is None:
                session.add(BaselineModel(fingerprint=fingerprint, settings_key=settings_key,
                                          record=json.dumps(record, default=str), created_at=time.time()))

        with suppress(IntegrityError):
            self.transaction(work)

    # ---- budget and claims ------------------------------------------------------------

    def set_target(self, study_name: str, *, target: int | None = None, more: int | None = None) -> int:
        """Create or change a study's budget: an absolute ``target`` or ``more`` than claimed now."""

        def work(session: Session) -> int:
            row = session.get(BudgetModel, study_name)
            if row is None:
                row = BudgetModel(study_name=study_name, target=0, claimed=0)
                session.add(row)
            if target is not None:
                row.target = target
            if more is not None:
                row.target = row.claimed + more
            return row.target

        return self.transaction(work)

    def budget(self, study_name: str) -> tuple[int, int]:
        """``(target, claimed)``; claimed counts running and finished trials."""

        def work(session: Session) -> tuple[int, int]:
            row = session.get(BudgetModel, study_name)
            return (0, 0) if row is None else (row.target, row.claimed)

        return self.transaction(work)

    def claim(self, study_name: str, owner: str) -> Claim | None:
        """Take one slot of the budget, atomically; None when the budget is spent."""

        def work(session: Session) -> Claim | None:
            taken = _updated(
                session,
                update(BudgetModel)
                .where(BudgetModel.study_name == study_name, BudgetModel.claimed < BudgetModel.target)
                .values(claimed=BudgetModel.claimed + 1),
            )
            if taken != 1:
                return None
            now = time.time()
            row = ClaimModel(study_name=study_name, owner=owner, state="running", claimed_at=now, heartbeat_at=now)
            session.add(row)
            session.flush()
            return Claim(id=row.id, study_name=study_name, owner=owner)

        return self.transaction(work)

    def attach(self, claim: Claim, trial_number: int) -> None:
        self.transaction(lambda s: s.execute(
            update(ClaimModel).where(ClaimModel.id == claim.id).values(trial_number=trial_number)
        ))

    def heartbeat(self, claim: Claim) -> bool:
        """Refresh the claim's heartbeat; False when another worker found it stale meanwhile."""
        return self.transaction(lambda s: _updated(
            s,
            update(ClaimModel).where(ClaimModel.id == claim.id, ClaimModel.state == "running")
            .values(heartbeat_at=time.time()),
        )) == 1

    def finish(self, claim: Claim) -> None:
        """The claimed trial is COMPLETE: its slot stays taken."""
        self.transaction(lambda s: s.execute(
            update(ClaimModel).where(ClaimModel.id == claim.id, ClaimModel.state == "running").values(state="done")
        ))

    def release(self, claim: Claim, note: str) -> None:
        """Give the slot back (rejected γ, failed or interrupted trial)."""
        self._end(claim.id, claim.study_name, "released", note, stale_before=None)

    def _end(self, claim_id: int, study_name: str, state: str, note: str, *, stale_before: float | None) -> bool:
        def work(session: Session) -> bool:
            query = update(ClaimModel).where(ClaimModel.id == claim_id, ClaimModel.state == "running")
            if stale_before is not None:
                query = query.where(ClaimModel.heartbeat_at < stale_before)
            if _updated(session, query.values(state=state, note=note[:512])) != 1:
                return False
            session.execute(
                update(BudgetModel).where(BudgetModel.study_name == study_name)
                .values(claimed=BudgetModel.claimed - 1)
            )
            return True

        return self.transaction(work)

    def reap_stale(self, study_name: str, grace_seconds: float) -> list[int | None]:
        """End every running claim whose heartbeat is older than ``grace_seconds``.

        Returns:
            The trial numbers of the reaped claims (None for a claim that never got its
            trial), which the caller marks FAIL in Optuna. Each claim is reaped by exactly
            one worker: the conditional update decides.
        """
        cutoff = time.time() - grace_seconds

        def find(session: Session) -> list[tuple[int, int | None]]:
            rows = session.execute(
                select(ClaimModel.id, ClaimModel.trial_number).where(
                    ClaimModel.study_name == study_name, ClaimModel.state == "running",
                    ClaimModel.heartbeat_at < cutoff,
                )
            ).all()
            return [(int(r[0]), r[1]) for r in rows]

        reaped: list[int | None] = []
        for claim_id, trial_number in self.transaction(find):
            note = f"stale: no heartbeat for {grace_seconds:.0f} s (process killed?)"
            if self._end(claim_id, study_name, "stale", note, stale_before=cutoff):
                reaped.append(trial_number)
        return reaped

    def running_claims(self, study_name: str) -> int:
        from sqlalchemy import func

        return self.transaction(lambda s: int(s.execute(
            select(func.count()).select_from(ClaimModel)
            .where(ClaimModel.study_name == study_name, ClaimModel.state == "running")
        ).scalar_one()))

    def claim_counts(self, study_name: str) -> dict[str, int]:
        from sqlalchemy import func

        def work(session: Session) -> dict[str, int]:
            rows = session.execute(
                select(ClaimModel.state, func.count()).where(ClaimModel.study_name == study_name)
                .group_by(ClaimModel.state)
            ).all()
            return {str(state): int(count) for state, count in rows}

        return self.transaction(work)

    def claim_notes(self, study_name: str) -> dict[int, str]:
        """Why claims ended other than done, by trial number (e.g. a stale worker)."""

        def work(session: Session) -> dict[int, str]:
            rows = session.execute(
                select(ClaimModel.trial_number, ClaimModel.note).where(
                    ClaimModel.study_name == study_name, ClaimModel.trial_number.is_not(None),
                    ClaimModel.state.in_(("stale", "released")),
                )
            ).all()
            return {int(number): str(note) for number, note in rows if note and number is not None}

        return self.transaction(work)
