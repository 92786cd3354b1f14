"""The engine's own tables beside Optuna's, in the same database, all prefixed ``dse_``.

- ``dse_schema``: the schema version, stamped when the tables are created. A database
  written by a newer lowrank-dse is refused with the upgrade to make.
- ``dse_memo``: every γ measured, keyed by (model fingerprint, measurement-settings key,
  γ hash). A γ already measured under the same model and settings is answered from here
  in any study of the database, and the trial says ``memoized = True``.
- ``dse_baselines``: the original model's measurement per (fingerprint, settings key),
  so a second study on the same model and tasks does not measure it again.
- the trial budget and its claims: :mod:`dse.study.claims` (same engine, same database).

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
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from sqlalchemy import Boolean, Float, Integer, String, Text, create_engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from dse.study.storage import StorageTarget, creating, engine_kwargs, retrying
from space.errors import StorageError

if TYPE_CHECKING:
    from dse.study.claims import Claim

__all__ = [
    "SCHEMA_VERSION",
    "EngineTables",
    "MemoEntry",
    "Measured",
    "SchemaModel",
    "MemoModel",
    "BaselineModel",
    "worker_owner",
]

SCHEMA_VERSION = 2  # 2: budget pools and claims in dse.study.claims
T = TypeVar("T")
# How often a worker waiting for another one's measurement of the same γ looks again.
_WAIT_SECONDS = 0.2


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


@dataclass(frozen=True)
class MemoEntry:
    """A memo answer: the stored record and where and how it was measured."""

    record: dict[str, Any]
    study_name: str
    early_stopped: bool
    tau: float | None


class Measured(Protocol):
    """What :meth:`EngineTables.measure_once` needs of a trial's outcome (``dse.evaluation.TrialOutcome``)."""

    @property
    def record(self) -> dict[str, Any] | None: ...

    @property
    def fresh(self) -> bool: ...


M = TypeVar("M", bound=Measured)


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

    def __init__(self, target: StorageTarget, *, create: bool = True) -> None:
        """Open the tables; ``create=False`` (queries) never writes and needs them to exist."""
        from dse.study.claims import Budget

        self.target = target
        self.engine = create_engine(target.url, **engine_kwargs(target))
        try:
            if create:
                creating(lambda: _Base.metadata.create_all(self.engine))
                retrying(self._stamp_or_check_version)
            self.budget = Budget(self.engine, self, create=create)
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

    def measure_once(self, fingerprint: str, settings_key: str, gamma_hash: str, claim: Claim,
                     measure: Callable[[dict[str, Any] | None], M], *, tau: float | None, study_name: str,
                     waiting: Callable[[], None]) -> tuple[M, MemoEntry | None]:
        """γ's trial through the memo: look it up or take its γ claim, measure once, store a fresh record.

        A γ another running claim is measuring is waited for (``waiting`` runs between
        looks; its record lands here) rather than measured twice; if that claim ends
        without one, this claim takes over. ``measure`` gets the stored record (or None)
        and decides whether it answers (its decision is re-derived under the study's τ,
        so the lookup ignores τ); a ``fresh`` outcome is stored under ``tau``. Returns the
        outcome and the memo entry that was consulted.
        """
        key = f"{fingerprint}|{settings_key}|{gamma_hash}"
        while True:
            entry = self.memo_get(fingerprint, settings_key, gamma_hash, tau=None)
            if entry is not None:
                break
            if self.budget.claim_gamma(key, claim):
                # Checked again: the previous holder may have stored it just before its claim ended.
                entry = self.memo_get(fingerprint, settings_key, gamma_hash, tau=None)
                break
            waiting()
            time.sleep(_WAIT_SECONDS)
        outcome = measure(None if entry is None else entry.record)
        if outcome.fresh and outcome.record is not None:
            self.memo_put(fingerprint, settings_key, outcome.record, tau=tau, study_name=study_name)
        return outcome, entry

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
