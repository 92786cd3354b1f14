"""A study's row in ``dse_studies``: the lock that creates a study once, and its sampler streams.

Creating the same study from N processes at once (on SQLite or PostgreSQL) must yield one
study: the first process to insert the row creates it, the others wait until it is marked
ready; a creator that died is taken over after a while (a conditional update, so one
process takes over). Each worker of each process draws its own stream number here, so
their samplers' seeds differ.
"""

from __future__ import annotations

import time

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dse.study.claim_tables import (
    ClaimModel,
    PoolModel,
    RequeueModel,
    StudyRowModel,
    Transactional,
    TrialHolderModel,
    updated,
)

__all__ = ["StudyRows"]


class StudyRows:
    """The ``dse_studies`` rows of one database (tables created by :class:`dse.study.claims.Budget`)."""

    def __init__(self, tables: Transactional) -> None:
        self._transaction = tables.transaction

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
                taken = updated(session,
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

        def work(session: Session) -> None:
            if updated(session, delete(StudyRowModel).where(
                    StudyRowModel.study_name == study_name, StudyRowModel.ready.is_(True))):
                session.execute(delete(PoolModel).where(PoolModel.study_name == study_name))
                session.execute(delete(ClaimModel).where(ClaimModel.study_name == study_name))
                session.execute(delete(RequeueModel).where(RequeueModel.study_name == study_name))
                session.execute(delete(TrialHolderModel).where(TrialHolderModel.study_name == study_name))

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
