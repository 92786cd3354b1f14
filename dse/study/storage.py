"""Storage URLs: checked before anything is written, then opened with SQLite's quirks handled.

SQLite is the default (``sqlite:///dse.db`` in the working directory). PostgreSQL and
MySQL URLs pass through unchanged: that is how several machines share one study.

Every check here runs before a database is created or opened for writing, so a bad URL
or an unwritable path costs one error line and leaves no file behind. Read-only commands
(list, show, export, …) never create a database: a missing SQLite file is an error.

SQLite and several processes: every connection waits up to ``SQLITE_TIMEOUT`` seconds
for a lock, the file is switched to write-ahead logging (readers then never block the
one writer), and :func:`retrying` repeats an operation that still meets "database is
locked" (SQLite refuses some lock upgrades at once instead of waiting).
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from space.errors import StorageError

if TYPE_CHECKING:
    import optuna
    import sqlalchemy

__all__ = [
    "DEFAULT_STORAGE",
    "STORAGE_ENV",
    "default_storage",
    "SQLITE_TIMEOUT",
    "StorageTarget",
    "check_storage",
    "open_optuna_storage",
    "engine_kwargs",
    "retrying",
    "creating",
]

logger = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///dse.db"
STORAGE_ENV = "DSE_STORAGE"


def default_storage() -> str:
    """``$DSE_STORAGE`` when set (one database for every working directory), else :data:`DEFAULT_STORAGE`."""
    import os

    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
SQLITE_TIMEOUT = 60.0
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SERVER_DIALECTS = ("postgresql", "mysql")

T = TypeVar("T")


@dataclass(frozen=True)
class StorageTarget:
    """A checked storage URL; ``path`` is the SQLite file (None for servers and memory)."""

    url: str
    dialect: str
    path: Path | None
    readonly: bool = False

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def exists(self) -> bool:
        """Whether there is a database to read (servers: assumed)."""
        if self.path is None:
            return True
        return self.path.is_file() and self.path.stat().st_size > 0

    def display(self) -> str:
        """The URL without a password, for messages."""
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)


def check_storage(url: str | None, *, create: bool, write: bool = True) -> StorageTarget:
    """Check a storage URL without touching the database.

    Args:
        url: an SQLAlchemy URL; None gives :func:`default_storage`.
        create: whether the caller will create the database when it is missing (``run``);
            read-only callers get an error for a missing SQLite file instead.
        write: whether the caller writes (``run``, ``resume``); queries (``show``, ``list``,
            ``export``, …) pass False and work on a read-only file.

    Raises:
        StorageError: malformed URL, unsupported dialect, or an SQLite path that is
            missing (read-only), unreadable, not a database, or not writable.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = url or default_storage()
    allowed = "expected sqlite:///path/to/file.db, postgresql://user@host/db or mysql://user@host/db"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StorageError(f"malformed storage URL {url!r}: {exc}; {allowed}") from None
    dialect = parsed.get_backend_name()
    if dialect in _SERVER_DIALECTS:
        if not parsed.host and not parsed.query.get("unix_socket") and not parsed.query.get("host"):
            shown = parsed.render_as_string(hide_password=True)
            raise StorageError(f"malformed storage URL {shown!r}: no host; {allowed}")
        return StorageTarget(url=url, dialect=dialect, path=None, readonly=not write)
    if dialect != "sqlite":
        raise StorageError(f"unsupported storage URL {url!r} (dialect {dialect!r}); {allowed}")
    database = parsed.database
    if not database or database == ":memory:":
        return StorageTarget(url=url, dialect="sqlite", path=None)
    if database.startswith("file:"):
        raise StorageError(f"storage URL {url!r}: SQLite URI file names are not supported; {allowed}")
    path = Path(database).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    _check_sqlite_path(url, path, create=create, write=write)
    return StorageTarget(url=url, dialect="sqlite", path=path, readonly=not write)


def _check_sqlite_path(url: str, path: Path, *, create: bool, write: bool) -> None:
    if path.exists():
        if path.is_dir():
            raise StorageError(f"storage {url!r}: {path} is a directory, not an SQLite file")
        try:
            with path.open("rb") as handle:
                header = handle.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise StorageError(f"storage {url!r} is unreadable: {exc.strerror or exc}") from None
        if header and header != _SQLITE_MAGIC:
            raise StorageError(f"storage {url!r}: {path} is not an SQLite database")
        if write and (not os.access(path, os.W_OK) or not _dir_writable(path.parent)):
            raise StorageError(f"storage {url!r} is not writable ({path}); choose another --storage")
        return
    if not create:
        raise StorageError(
            f"no study database at {path} (storage {url!r}); run `dse study run` first or pass --storage"
        )
    parent = path.parent
    if not parent.is_dir():
        raise StorageError(f"storage {url!r} is not writable: directory {parent} does not exist")
    if not _dir_writable(parent):
        raise StorageError(f"storage {url!r} is not writable: cannot create files in {parent}")


def _dir_writable(directory: Path) -> bool:
    # os.access says yes to root on read-only mounts and /proc; creating a file is the real test.
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".dse-write-test-"):
            return True
    except OSError:
        return False


def _sqlite_connect(path: str, readonly: bool = False) -> Any:
    import sqlite3

    if readonly:
        # Queries never write: a read-only file (or directory) still answers them.
        return sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True, timeout=SQLITE_TIMEOUT,
                               check_same_thread=False)
    # check_same_thread=False: pooled connections move between the worker and its heartbeat
    # thread (one user at a time, which the pool guarantees).
    conn = sqlite3.connect(path, timeout=SQLITE_TIMEOUT, check_same_thread=False)
    # In WAL mode NORMAL never corrupts the file; a power cut may lose the last commits,
    # which costs at most the trials being told. FULL syncs every one of a trial's ~20 writes.
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def engine_kwargs(target: StorageTarget) -> dict[str, Any]:
    """SQLAlchemy ``create_engine`` arguments for this storage."""
    if target.is_sqlite and target.path is not None:
        from functools import partial

        return {"creator": partial(_sqlite_connect, str(target.path), target.readonly)}
    if target.is_sqlite:
        return {"connect_args": {"timeout": SQLITE_TIMEOUT}}
    # Servers: a connection the server dropped (restart, idle timeout) is replaced, not an error.
    return {"pool_pre_ping": True}


def _wal(engine: sqlalchemy.Engine) -> None:
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("PRAGMA journal_mode=WAL"))
        conn.commit()


def open_optuna_storage(target: StorageTarget, *, create: bool = True, heartbeat_interval: int | None = None,
                        grace_period: int | None = None) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on ``target``.

    Args:
        target: the checked storage URL and its backend.
        create: create Optuna's tables when missing (``run``). Read-only callers pass
            False: a database without them holds no study and is left as it is.
        heartbeat_interval: seconds between a running trial's heartbeats; given by
            workers, which then use Optuna's heartbeat and stale-trial detection
            (see :mod:`dse.study.reaper`).
        grace_period: seconds without a heartbeat before a RUNNING trial is failed.

    Raises:
        StorageError: the database cannot be opened, holds no studies (read-only), or its
            schema is incompatible.
    """
    import warnings

    import optuna
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.exc import SQLAlchemyError

    try:
        engine = create_engine(target.url, **engine_kwargs(target))
        try:
            if not create and "studies" not in retrying(lambda: inspect(engine).get_table_names()):
                raise StorageError(f"{target.display()} holds no studies; run `dse study run` first")
            if create and target.is_sqlite and target.path is not None and not target.readonly:
                retrying(lambda: _wal(engine))
        finally:
            engine.dispose()
        heartbeat: dict[str, Any] = {}
        if heartbeat_interval is not None:
            # No stale-trial callback: dse.study.requeue queues a stale trial's γ again so
            # that a kill between the fail and the re-queue loses nothing.
            heartbeat = {"heartbeat_interval": heartbeat_interval, "grace_period": grace_period}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return creating(lambda: optuna.storages.RDBStorage(
                target.url, engine_kwargs=engine_kwargs(target), skip_table_creation=not create, **heartbeat,
            ))
    except (SQLAlchemyError, RuntimeError, ImportError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError) or isinstance(exc.__cause__, ImportError):
            first = (f"no database driver for {target.dialect} ({exc.__cause__ or exc}); "
                     f"install it with: pip install 'lowrank-dse[{target.dialect}]'")
        raise StorageError(f"cannot open storage {target.display()!r}: {first}") from None


def _is_lock_error(exc: BaseException) -> bool:
    from sqlalchemy.exc import OperationalError

    text = str(exc).lower()
    return isinstance(exc, OperationalError) and ("locked" in text or "busy" in text)


def retrying(operation: Callable[[], T], *, attempts: int = 20, base_delay: float = 0.05) -> T:
    """Run ``operation``, repeating it while SQLite answers "database is locked".

    A failed SQLAlchemy transaction is rolled back, so repeating it is safe.
    """
    for attempt in range(attempts):
        try:
            return operation()
        except Exception as exc:  # only lock errors are retried; others re-raise
            if not _is_lock_error(exc) and not _is_lock_error(exc.__cause__ or exc):
                raise
            if attempt == attempts - 1:
                raise StorageError(
                    f"the database stayed locked through {attempts} attempts; is another process holding it?"
                ) from exc
            delay = min(2.0, base_delay * 2**attempt) * (0.5 + random.random())
            logger.debug("database locked, retrying in %.2f s", delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _is_creation_race(exc: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError

    text = str(exc).lower()
    # IntegrityError: both stamped the schema version (Optuna's alembic_version, version_info).
    return isinstance(exc, IntegrityError) or "already exists" in text or "duplicate key" in text \
        or "uniqueviolation" in text or "unique constraint" in text


def creating(operation: Callable[[], T], *, attempts: int = 10) -> T:
    """Run a schema-creating ``operation``, repeating it when another process created the same table.

    Two processes opening a fresh database at once both issue ``CREATE TABLE`` and stamp
    the schema version; the loser gets "table … already exists" (SQLite), a unique
    violation on ``pg_type`` (PostgreSQL) or on the version row. The tables are then there,
    so doing it again succeeds.
    """
    for attempt in range(attempts):
        try:
            return retrying(operation)
        except Exception as exc:
            cause = exc.__cause__ or exc
            if attempt == attempts - 1 or not (_is_creation_race(exc) or _is_creation_race(cause)):
                raise
            time.sleep(0.05 * (1 + random.random()))
    raise AssertionError("unreachable")
