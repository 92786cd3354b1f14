"""The factor cache on disk: one safetensors file per entry, listed in the SQLite index.

Files are written to a temporary name and renamed into place, so a crash never leaves
a half-written entry under a real name. A read checks the file's length, SHA-256 and
tensor shapes against the index; one that does not match is reported as one warning
line, deleted and recomputed, never used. Beyond ``max_bytes`` the least recently used
entries are evicted. A disk that fails (full, read-only) turns the store off for the
process: the cache keeps factors in memory only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from dse.cache_entries import NESTED_METHODS, CacheInfo, CacheStats, Entry, ModelUsage, expected_shapes
from dse.cache_index import CacheIndex
from space.errors import StorageError

if TYPE_CHECKING:
    import torch

__all__ = ["DiskStore"]

logger = logging.getLogger("dse.cache")


class DiskStore:
    """Entries under ``root``, at most ``max_bytes`` of files; counts into ``stats``.

    Not locked: :class:`dse.cache.FactorCache` calls it under its own lock.
    """

    def __init__(self, root: Path, max_bytes: int, stats: CacheStats) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.stats = stats
        self.index = CacheIndex(root)
        self.ok = True  # False after a disk failure: memory only from then on

    def _failed(self, action: str, exc: BaseException) -> None:
        if self.ok:
            logger.warning("factor cache: cannot %s %s (%s); keeping factors in memory only",
                           action, self.root, exc)
        self.ok = False

    def get(self, key: str, rank: int, shape: tuple[int, int], method: str) -> Entry | None:
        """The entry stored under ``key`` if it serves ``rank`` and passes its checks; else None."""
        if not self.ok:
            return None
        start = time.perf_counter()
        try:
            conn = self.index.connect(create=False, repair=True)
            if conn is None:
                return None
            row = conn.execute(
                "SELECT rank, height, width, file, nbytes, sha256 FROM entries WHERE key = ?",
                (key,),
            ).fetchone()
            if row is None:
                return None
            stored_rank, height, width, file, nbytes, digest = row
            if (height, width) != shape:
                logger.warning("factor cache: entry %s holds a %d×%d weight, not %d×%d; "
                               "replacing it", key, height, width, *shape)
                self._delete(conn, key, file)
                return None
            usable = stored_rank >= rank if method in NESTED_METHODS else stored_rank == rank
            if not usable:
                return None
            tensors, problem = self._read_file(file, nbytes, digest, method, stored_rank, shape)
            if tensors is None:
                logger.warning("factor cache: entry %s is corrupt (%s); deleting it and "
                               "decomposing again", key, " ".join(problem.split()))
                self.stats.corrupt += 1
                self._delete(conn, key, file)
                return None
            conn.execute("UPDATE entries SET last_used = ? WHERE key = ?", (time.time(), key))
        except sqlite3.Error as exc:
            self._failed("read the index in", exc)
            return None
        finally:
            self.stats.load_seconds += time.perf_counter() - start
        return Entry(method=method, rank=stored_rank, shape=shape, tensors=tensors)

    def _resolve(self, file: str) -> Path | None:
        path = (self.root / file).resolve()
        root = self.root.resolve()
        return path if root in path.parents else None

    def _read_file(
        self, file: str, nbytes: int, digest: str, method: str, rank: int, shape: tuple[int, int]
    ) -> tuple[dict[str, torch.Tensor] | None, str]:
        from safetensors.torch import load

        path = self._resolve(file)
        if path is None:
            return None, f"its file name {file!r} points outside the cache"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, "its file is missing"
        except OSError as exc:
            return None, f"its file is unreadable: {exc.strerror or exc}"
        if len(data) != nbytes:
            return None, f"file is {len(data)} bytes, the index says {nbytes}"
        if hashlib.sha256(data).hexdigest() != digest:
            return None, "SHA-256 checksum mismatch"
        try:
            tensors = load(data)
        except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types; reported as a bad entry
            return None, f"unreadable safetensors data: {exc}"
        expected = expected_shapes(method, rank, shape)
        got = {name: tuple(t.shape) for name, t in tensors.items()}
        if got != expected:
            return None, f"tensors {got} do not match {expected}"
        return tensors, ""

    def put(
        self, key: str, entry: Entry, fingerprint: str, layer: int, tensor: str,
        label: str | None, seconds: float,
    ) -> None:
        """Write ``entry`` under ``key`` (unless another process stored at least its rank), then evict."""
        if not self.ok:
            return
        from safetensors.torch import save

        data = save(entry.tensors, metadata={"key": key, "method": entry.method,
                                             "rank": str(entry.rank)})
        if len(data) > self.max_bytes:
            return
        digest = hashlib.sha256(data).hexdigest()
        suffix = "" if entry.method in NESTED_METHODS else f"-r{entry.rank}"
        folder = _safe_name(fingerprint)
        name = (f"L{layer}-{_safe_name(tensor, 24)}-{_safe_name(entry.method, 16)}{suffix}-"
                f"{uuid.uuid4().hex[:12]}.safetensors")
        file = f"{folder}/{name}"
        try:
            conn = self.index.connect(create=True, repair=True)
            assert conn is not None
            (self.root / folder).mkdir(exist_ok=True)
            _atomic_write(self.root / file, data)
            now = time.time()
            with self.index.transaction(conn):
                old = conn.execute("SELECT rank, file FROM entries WHERE key = ?",
                                   (key,)).fetchone()
                if old is not None and entry.method in NESTED_METHODS and old[0] >= entry.rank:
                    # Another process stored at least as many triplets meanwhile: keep those.
                    stale: str | None = file
                else:
                    stale = old[1] if old is not None else None
                    conn.execute(
                        "INSERT OR REPLACE INTO entries (key, fingerprint, layer, tensor, method,"
                        " rank, height, width, dtype, file, nbytes, sha256, label, seconds,"
                        " created, last_used) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (key, fingerprint, layer, tensor, entry.method, entry.rank, entry.shape[0],
                         entry.shape[1], str(next(iter(entry.tensors.values())).dtype), file,
                         len(data), digest, label, seconds, now, now),
                    )
            self._unlink(stale)  # file names are unique: this is never the live entry's
            self.evict(conn, keep=key)
        except (OSError, sqlite3.Error) as exc:
            self._unlink(file)
            self._failed("write to", exc)

    def touch(self, key: str) -> None:
        """Refresh ``key``'s LRU stamp (best effort)."""
        if not self.ok:
            return
        try:
            conn = self.index.connect(create=False, repair=False)
            if conn is not None:
                conn.execute("UPDATE entries SET last_used = ? WHERE key = ?", (time.time(), key))
        except (sqlite3.Error, StorageError):
            pass  # a stale LRU stamp only makes eviction less precise

    def _delete(self, conn: sqlite3.Connection, key: str, file: str) -> None:
        conn.execute("DELETE FROM entries WHERE key = ?", (key,))
        self._unlink(file)

    def _unlink(self, file: str | None) -> None:
        if file is None:
            return
        path = self._resolve(file)
        if path is not None:
            path.unlink(missing_ok=True)

    def evict(self, conn: sqlite3.Connection, *, keep: str) -> None:
        """Delete least recently used entries (never ``keep``) until under max_bytes."""
        total = conn.execute("SELECT COALESCE(SUM(nbytes), 0) FROM entries").fetchone()[0]
        if total <= self.max_bytes:
            return
        rows = conn.execute(
            "SELECT key, file, nbytes FROM entries WHERE key != ? "
            "ORDER BY last_used ASC, created ASC",
            (keep,),
        ).fetchall()
        for key, file, nbytes in rows:
            self._delete(conn, key, file)
            self.stats.evictions += 1
            total -= nbytes
            if total <= self.max_bytes:
                break

    def info(self) -> CacheInfo:
        """Entries and bytes on disk, per model fingerprint.

        Raises:
            StorageError: the root is not a directory, or the index is unreadable.
        """
        self.index.check_root()
        try:
            conn = self.index.connect(create=False, repair=False)
            rows = [] if conn is None else conn.execute(
                "SELECT fingerprint, COUNT(*), SUM(nbytes), MAX(label) FROM entries "
                "GROUP BY fingerprint ORDER BY fingerprint"
            ).fetchall()
        except sqlite3.Error as exc:
            raise StorageError(
                f"factor cache index {self.index.path} is unreadable ({exc}); "
                f"run `dse cache clear --cache-dir {self.root.parent}`"
            ) from None
        models = {fp: ModelUsage(entries=n, bytes=b, label=lab) for fp, n, b, lab in rows}
        return CacheInfo(
            root=self.root, entries=sum(m.entries for m in models.values()),
            bytes=sum(m.bytes for m in models.values()), max_bytes=self.max_bytes,
            models=models,
        )

    def clear(self) -> CacheInfo:
        """Delete every entry on disk and return what the disk held before.

        Only the cache's own files are removed (the index and ``*.safetensors`` under
        the root), never anything else in the directory.
        """
        self.index.check_root()
        try:
            before = self.info()
        except StorageError:
            before = CacheInfo(root=self.root, entries=0, bytes=0, max_bytes=self.max_bytes, models={})
        self.index.close()
        if self.root.is_dir():
            self.index.remove_all_files()
        self.ok = True
        return before


def _safe_name(text: str, limit: int = 48) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:limit]
    if cleaned != text:
        cleaned += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return cleaned or "_"


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, flush it to disk, then rename it into place."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
