"""The factor cache's SQLite index: opened once per process, checked, repaired when damaged.

The index (``index.sqlite`` under the cache root) lists every entry on disk with its
file's length and SHA-256; SQLite serializes the processes that share one root. A
damaged index is replaced by a new, empty one (and the files it listed removed) when
the caller may repair, and is one ``StorageError`` line otherwise.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from space.errors import StorageError

__all__ = ["CacheIndex", "SCHEMA_VERSION", "INDEX_NAME"]

logger = logging.getLogger("dse.cache")

SCHEMA_VERSION = 1
INDEX_NAME = "index.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    layer INTEGER NOT NULL,
    tensor TEXT NOT NULL,
    method TEXT NOT NULL,
    rank INTEGER NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL,
    dtype TEXT NOT NULL,
    file TEXT NOT NULL,
    nbytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    label TEXT,
    seconds REAL NOT NULL,
    created REAL NOT NULL,
    last_used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_last_used ON entries (last_used);
"""


class CacheIndex:
    """The connection to one cache root's index (reopened after a fork) and the root's checks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0

    def close(self) -> None:
        """Release the connection (reopened when used again)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def path(self) -> Path:
        """The index file."""
        return self.root / INDEX_NAME

    def check_root(self) -> None:
        """Refuse a root that is (under) a file, in one line."""
        # The nearest existing ancestor: `--cache-dir FILE` puts the root at FILE/factors.
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.exists() and not existing.is_dir():
            raise StorageError(f"factor cache directory {self.root}: {existing} is a file, not a directory; "
                               f"pass --cache-dir (or set DSE_CACHE_DIR) to a directory")


    def check_writable(self) -> None:
        """Fail now, in one line, if the cache directory cannot be created or written.

        Called before a model loads, so a wrong ``--cache-dir`` costs no load time. Writes
        nothing that stays (a temporary file in the nearest existing directory).

        Raises:
            StorageError: the directory (or its nearest existing parent) is a file, or is
                not writable.
        """
        import tempfile

        self.check_root()
        existing = self.root
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        try:
            with tempfile.NamedTemporaryFile(dir=existing, prefix=".dse-write-test-"):
                pass
        except OSError as exc:
            raise StorageError(f"factor cache directory {self.root} is not writable ({exc.strerror or exc} in "
                               f"{existing}); pass --cache-dir (or set DSE_CACHE_DIR) to a writable directory"
                               ) from None

    def connect(self, *, create: bool, repair: bool) -> sqlite3.Connection | None:
        """The index connection (reopened after a fork); None if there is no index yet."""
        if self._conn is not None and self._conn_pid == os.getpid():
            return self._conn
        self.check_root()
        if not create and not self.path.is_file():
            return None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the factor cache directory {self.root}: "
                               f"{exc.strerror or exc}; pass --cache-dir (or set DSE_CACHE_DIR) "
                               f"to a writable directory") from None
        try:
            conn = self._open_index()
        except sqlite3.OperationalError as exc:
            # Permissions, a full disk or a read-only mount: the index is fine, leave it alone.
            if not is_corruption(exc):
                raise StorageError(f"cannot open the factor cache index {self.path}: {exc}; pass "
                                   f"--cache-dir (or set DSE_CACHE_DIR) to a writable directory") from None
            if not repair:
                raise StorageError(
                    f"factor cache index {self.path} is unreadable ({exc}); "
                    f"run `dse cache clear --cache-dir {self.root.parent}`"
                ) from None
            logger.warning("factor cache index %s is unreadable (%s); starting a new one", self.path, exc)
            self.remove_all_files()
            conn = self._open_index()
        except sqlite3.DatabaseError as exc:
            if not repair:
                raise StorageError(
                    f"factor cache index {self.path} is unreadable ({exc}); "
                    f"run `dse cache clear --cache-dir {self.root.parent}`"
                ) from None
            logger.warning("factor cache index %s is unreadable (%s); starting a new one",
                           self.path, exc)
            self.remove_all_files()
            conn = self._open_index()
        self._conn, self._conn_pid = conn, os.getpid()
        return conn

    def _open_index(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None,
                               check_same_thread=False)
        try:
            # WAL with synchronous=NORMAL: a commit (an LRU stamp on every disk hit) needs no
            # fsync; a power cut may lose the last stamps but never corrupts the index. Where
            # WAL is unavailable (some network file systems) SQLite keeps its rollback journal.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StorageError(
                    f"factor cache index {self.path} has schema version {row[0]}, this "
                    f"lowrank-dse reads version {SCHEMA_VERSION}; run "
                    f"`dse cache clear --cache-dir {self.root.parent}`"
                )
        except BaseException:
            conn.close()
            raise
        return conn


    @contextmanager
    def transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT, rolled back on any error."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def remove_all_files(self) -> None:
        """Remove the index and the cache's own files under the root, nothing else."""
        for suffix in ("", "-journal", "-wal", "-shm"):
            (self.root / (INDEX_NAME + suffix)).unlink(missing_ok=True)
        for folder in [p for p in self.root.iterdir() if p.is_dir()]:
            for path in folder.iterdir():
                if path.name.endswith((".safetensors", ".safetensors.tmp")):
                    path.unlink(missing_ok=True)
            with suppress(OSError):  # not ours, or not empty: leave it
                folder.rmdir()



def is_corruption(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite says the index file itself is damaged (not merely inaccessible)."""
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text
