"""FactorCache: every (model, layer, tensor, method) is decomposed at most once.

A study applies hundreds of γ to one model; most share (layer, tensor) pairs, and
decomposing a 4096×11008 matrix takes seconds. The cache has two layers:

* in memory, an LRU of recently used factors (bounded by ``memory_bytes``);
* on disk, one safetensors file per entry plus a SQLite index under
  ``space.env.cache_dir() / "factors"`` (so ``--cache-dir`` / ``$DSE_CACHE_DIR`` apply),
  bounded by ``max_bytes`` with least-recently-used eviction.

For ``svd`` one entry serves every rank: truncated SVDs are nested, so the entry keeps
the leading singular triplets up to the largest rank asked so far, and any lower rank
is sliced from it. For matrices small enough for a full SVD that slice is exactly what
``decompose`` returns; for the randomized path (min(H, W) > 1024) it is a truncation of
a higher-rank run, so the factors can differ slightly from a direct run at the lower
rank, and only the higher rank's error was checked against the optimum. Only a larger
rank triggers new work, and replaces the entry. Other methods (``hooi``) are keyed by
rank too, since their factors of different ranks are unrelated. The calibrated methods
(``asvd``, ``svd-llm``, ``feature``) store two nested factors ``a``, ``b`` (and the
Cholesky jitter) and are keyed by their calibration too (``variant``: the statistics'
key and method options), so one method or calibration never answers for another.

Entries are keyed by the model's fingerprint (a hash of its weights, not its name).
Files are written to a temporary name and renamed into place, so a crash never leaves
a half-written entry under a real name. The index records each file's length and
SHA-256; a read that does not match (truncated, bit-flipped, missing, unreadable) is
reported as one warning line, deleted and recomputed, never used. Several processes
may share one cache directory: SQLite serializes the index, and every file name is
unique.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from space.config import TWO_FACTOR_METHODS
from space.errors import InvalidConfigError, StorageError

if TYPE_CHECKING:
    import torch

    from dse.decompose import TuckerFactors
    from dse.methods import TwoFactors

__all__ = [
    "FactorCache",
    "CacheStats",
    "CacheInfo",
    "ModelUsage",
    "FactorLookup",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MEMORY_BYTES",
    "SCHEMA_VERSION",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MEMORY_BYTES = 1024**3
SCHEMA_VERSION = 1
INDEX_NAME = "index.sqlite"
# Methods whose factors of a lower rank are a slice of those of a higher rank.
_NESTED_METHODS = frozenset({"svd"}) | TWO_FACTOR_METHODS
# A memory hit refreshes the entry's disk LRU stamp at most this often (seconds).
_TOUCH_INTERVAL = 60.0

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


class CacheStats(BaseModel):
    """Counters since the cache object was made; subtract two snapshots for one span."""

    hits: int = 0  # served without decomposing (memory_hits + disk_hits)
    misses: int = 0  # needed a decomposition
    memory_hits: int = 0
    disk_hits: int = 0
    decompositions: int = 0
    corrupt: int = 0  # disk entries found damaged, deleted and recomputed
    evictions: int = 0  # disk entries removed to stay under max_bytes
    decompose_seconds: float = 0.0
    load_seconds: float = 0.0  # reading and checking disk entries

    def snapshot(self) -> CacheStats:
        return self.model_copy()

    def __sub__(self, other: CacheStats) -> CacheStats:
        return CacheStats(**{
            name: getattr(self, name) - getattr(other, name) for name in CacheStats.model_fields
        })


class FactorLookup(BaseModel):
    """What the last :meth:`FactorCache.factors` call did and how long it took."""

    fingerprint: str
    layer: int
    tensor: str
    method: str
    rank: int
    stored_rank: int  # rank of the entry it was served from (≥ rank for svd)
    source: Literal["memory", "disk", "computed"]
    seconds: float  # the whole call
    decompose_seconds: float  # 0.0 unless source == "computed"
    jitter: float = 0.0  # svd-llm: diagonal added to XᵀX (-1: fell back to svd)


class ModelUsage(BaseModel):
    """Disk use of one model fingerprint."""

    entries: int
    bytes: int
    label: str | None = None


class CacheInfo(BaseModel):
    """The on-disk cache: where it is, how full, and by which models."""

    root: Path
    entries: int
    bytes: int
    max_bytes: int
    models: dict[str, ModelUsage]


@dataclass
class _Entry:
    """Factors held in memory (on the CPU, in the compute dtype)."""

    method: str
    rank: int
    shape: tuple[int, int]
    tensors: dict[str, torch.Tensor]
    touched: float = field(default_factory=time.monotonic)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def serves(self, rank: int, shape: tuple[int, int]) -> bool:
        if self.shape != shape:
            return False
        return self.rank >= rank if self.method in _NESTED_METHODS else self.rank == rank

    def factors(self, rank: int) -> TuckerFactors:
        from dse.decompose import SingularTriplets, TuckerFactors
        from dse.methods import TwoFactors

        if self.method in TWO_FACTOR_METHODS:
            return TwoFactors(self.tensors["a"], self.tensors["b"]).factors(rank)
        if self.method in _NESTED_METHODS:
            t = self.tensors
            return SingularTriplets(t["u"], t["s"], t["v"]).factors(rank)
        return TuckerFactors(self.tensors["u1"], self.tensors["core"], self.tensors["u2"])


def _expected_shapes(method: str, rank: int, shape: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    height, width = shape
    if method in TWO_FACTOR_METHODS:
        return {"a": (height, rank), "b": (width, rank), "jitter": (1,)}
    if method in _NESTED_METHODS:
        return {"u": (height, rank), "s": (rank,), "v": (width, rank)}
    return {"u1": (height, rank), "core": (rank, rank), "u2": (width, rank)}


def _safe_name(text: str, limit: int = 48) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "_", text)[:limit]
    if cleaned != text:
        cleaned += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return cleaned or "_"


class FactorCache:
    """Tucker factors of model weights, decomposed once and served for every later γ.

    Args:
        root: directory of the cache; default ``space.env.cache_dir() / "factors"``.
        max_bytes: the most bytes of factor files on disk; least recently used entries
            are evicted beyond it (0 keeps nothing on disk).
        memory_bytes: the most bytes of factors held in memory.

    Thread-safe; several processes may share ``root``. Nothing touches the disk until
    the first entry is written, so making a cache is free.
    """

    def __init__(
        self, root: Path | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> None:
        from space.env import cache_dir

        for name, value in (("max_bytes", max_bytes), ("memory_bytes", memory_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidConfigError(f"{name} must be a non-negative integer, got {value!r}")
        self.root = Path(root).expanduser() if root is not None else cache_dir() / "factors"
        self.max_bytes = max_bytes
        self.memory_bytes = memory_bytes
        self.stats = CacheStats()
        self.last: FactorLookup | None = None
        self._memory: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._conn_pid = 0
        self._disk_ok = True

    @classmethod
    def for_cache_dir(
        cls, cache_dir: str | os.PathLike[str] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES,
        memory_bytes: int = DEFAULT_MEMORY_BYTES,
    ) -> FactorCache:
        """The cache in the ``factors`` folder of a ``--cache-dir``, where every command places it.

        The folder defaults to $DSE_CACHE_DIR, else the platform cache dir.
        """
        from space.env import cache_dir as resolve

        return cls(resolve(cache_dir) / "factors", max_bytes=max_bytes, memory_bytes=memory_bytes)

    def close(self) -> None:
        """Release the index connection (reopened if the cache is used again)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> FactorCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FactorCache(root={str(self.root)!r}, max_bytes={self.max_bytes})"

    # ------------------------------------------------------------------ lookups

    def factors(
        self, fingerprint: str, layer: int, tensor: str, weight: torch.Tensor, rank: int,
        method: str = "svd", *, label: str | None = None, variant: str | None = None,
        compute: Callable[[int], TwoFactors] | None = None,
    ) -> tuple[TuckerFactors, bool]:
        """Factors of ``weight`` at ``rank``, from memory, disk, or a new decomposition.

        Args:
            fingerprint: the model's weight fingerprint (``LoadedModel.fingerprint``).
            layer: 0-based layer index of the tensor.
            tensor: the tensor's short name in the model's spec (``q``, ``gate``, ...).
            weight: its H×W weight; used only when the factors must be computed.
            rank: the pruned rank, 1 ≤ rank ≤ min(H, W).
            method: a name in :data:`dse.decompose.METHODS`.
            label: a readable model name shown by :meth:`info` (optional).
            variant: what else the factors depend on (calibrated methods: the statistics'
                key and method options); part of the key.
            compute: for calibrated methods, ``rank -> TwoFactors`` (the cache cannot
                compute them from the weight alone).

        Returns:
            ``(factors, from_cache)``: factors on the weight's device in its dtype (a
            copy: changing them never changes the cache), and whether no decomposition
            was needed. :attr:`last` records the call's source and seconds.
        """
        from dse.decompose import METHODS, check_weight_rank

        if method in TWO_FACTOR_METHODS:
            if compute is None or not variant:
                raise InvalidConfigError(f"method {method!r} needs calibration: pass its "
                                         f"variant key and a compute function")
        else:
            METHODS.get(method)
        check_weight_rank(weight, rank)
        shape = (int(weight.shape[0]), int(weight.shape[1]))
        key = self._key(fingerprint, layer, tensor, method, rank, variant)
        start = time.perf_counter()
        with self._lock:
            entry = self._memory_get(key, rank, shape)
            source: Literal["memory", "disk", "computed"] = "memory"
            if entry is None:
                entry = self._disk_get(key, rank, shape, method)
                source = "disk"
            decompose_seconds = 0.0
            if entry is None:
                source = "computed"
                entry, decompose_seconds = self._compute(weight, rank, method, compute)
                self._memory_put(key, entry)
                self._disk_put(key, entry, fingerprint, layer, tensor, label, decompose_seconds)
            factors = entry.factors(rank)
            factors = type(factors)(*(
                t.to(device=weight.device, dtype=weight.dtype, copy=True) for t in factors
            ))
            hit = source != "computed"
            self.stats.hits += hit
            self.stats.misses += not hit
            self.stats.memory_hits += source == "memory"
            self.stats.disk_hits += source == "disk"
            self.last = FactorLookup(
                fingerprint=fingerprint, layer=layer, tensor=tensor, method=method, rank=rank,
                stored_rank=entry.rank, source=source, seconds=time.perf_counter() - start,
                decompose_seconds=decompose_seconds,
                jitter=float(entry.tensors["jitter"][0]) if "jitter" in entry.tensors else 0.0,
            )
        return factors, hit

    @staticmethod
    def _key(fingerprint: str, layer: int, tensor: str, method: str, rank: int,
             variant: str | None = None) -> str:
        key = f"{fingerprint}/{layer}/{tensor}/{method}"
        if variant:
            key += f"@{variant}"
        return key if method in _NESTED_METHODS else f"{key}/r{rank}"

    def _compute(self, weight: torch.Tensor, rank: int, method: str,
                 compute: Callable[[int], TwoFactors] | None = None) -> tuple[_Entry, float]:
        import torch

        from dse.decompose import decompose, truncated_svd

        start = time.perf_counter()
        shape = (int(weight.shape[0]), int(weight.shape[1]))
        if method in TWO_FACTOR_METHODS:
            assert compute is not None
            two = compute(rank)
            tensors = {"a": two.a, "b": two.b,
                       "jitter": torch.tensor([two.jitter], dtype=torch.float64)}
        elif method in _NESTED_METHODS:
            triplets = truncated_svd(weight, rank)
            tensors = {"u": triplets.u, "s": triplets.s, "v": triplets.v}
        else:
            # Keep hooi's factors in float32 (or float64) whatever the model's dtype.
            work = weight if weight.dtype.is_floating_point and weight.element_size() >= 4 \
                else weight.float()
            factors = decompose(work, rank, method=method)
            tensors = {"u1": factors.u1, "core": factors.core, "u2": factors.u2}
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
        seconds = time.perf_counter() - start
        self.stats.decompositions += 1
        self.stats.decompose_seconds += seconds
        return _Entry(method=method, rank=rank, shape=shape, tensors=tensors), seconds

    # ------------------------------------------------------------------ memory layer

    def _memory_get(self, key: str, rank: int, shape: tuple[int, int]) -> _Entry | None:
        entry = self._memory.get(key)
        if entry is None or not entry.serves(rank, shape):
            return None
        self._memory.move_to_end(key)
        now = time.monotonic()
        if now - entry.touched > _TOUCH_INTERVAL:
            entry.touched = now
            self._touch(key)
        return entry

    def _memory_put(self, key: str, entry: _Entry) -> None:
        self._memory[key] = entry
        self._memory.move_to_end(key)
        total = sum(e.nbytes for e in self._memory.values())
        while total > self.memory_bytes and len(self._memory) > 1:
            _, dropped = self._memory.popitem(last=False)
            total -= dropped.nbytes

    # ------------------------------------------------------------------ disk layer

    @property
    def index_path(self) -> Path:
        return self.root / INDEX_NAME

    def _check_root(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"factor cache directory {self.root} is a file, not a directory; "
                               f"pass --cache-dir (or set DSE_CACHE_DIR) to a directory")

    def _connect(self, *, create: bool, repair: bool) -> sqlite3.Connection | None:
        """The index connection (reopened after a fork); None if there is no index yet."""
        if self._conn is not None and self._conn_pid == os.getpid():
            return self._conn
        self._check_root()
        if not create and not self.index_path.is_file():
            return None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the factor cache directory {self.root}: "
                               f"{exc.strerror or exc}; pass --cache-dir (or set DSE_CACHE_DIR) "
                               f"to a writable directory") from None
        try:
            conn = self._open_index()
        except sqlite3.DatabaseError as exc:
            if not repair:
                raise StorageError(
                    f"factor cache index {self.index_path} is unreadable ({exc}); "
                    f"run `dse cache clear --cache-dir {self.root.parent}`"
                ) from None
            logger.warning("factor cache index %s is unreadable (%s); starting a new one",
                           self.index_path, exc)
            self._remove_all_files()
            conn = self._open_index()
        self._conn, self._conn_pid = conn, os.getpid()
        return conn

    def _open_index(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.index_path), timeout=30.0, isolation_level=None,
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
                    f"factor cache index {self.index_path} has schema version {row[0]}, this "
                    f"lowrank-dse reads version {SCHEMA_VERSION}; run "
                    f"`dse cache clear --cache-dir {self.root.parent}`"
                )
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _disk_failed(self, action: str, exc: BaseException) -> None:
        if self._disk_ok:
            logger.warning("factor cache: cannot %s %s (%s); keeping factors in memory only",
                           action, self.root, exc)
        self._disk_ok = False

    def _disk_get(self, key: str, rank: int, shape: tuple[int, int], method: str) -> _Entry | None:
        if not self._disk_ok:
            return None
        start = time.perf_counter()
        try:
            conn = self._connect(create=False, repair=True)
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
            usable = stored_rank >= rank if method in _NESTED_METHODS else stored_rank == rank
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
            self._disk_failed("read the index in", exc)
            return None
        finally:
            self.stats.load_seconds += time.perf_counter() - start
        entry = _Entry(method=method, rank=stored_rank, shape=shape, tensors=tensors)
        self._memory_put(key, entry)
        return entry

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
        expected = _expected_shapes(method, rank, shape)
        got = {name: tuple(t.shape) for name, t in tensors.items()}
        if got != expected:
            return None, f"tensors {got} do not match {expected}"
        return tensors, ""

    def _disk_put(
        self, key: str, entry: _Entry, fingerprint: str, layer: int, tensor: str,
        label: str | None, seconds: float,
    ) -> None:
        if not self._disk_ok:
            return
        from safetensors.torch import save

        data = save(entry.tensors, metadata={"key": key, "method": entry.method,
                                             "rank": str(entry.rank)})
        if len(data) > self.max_bytes:
            return
        digest = hashlib.sha256(data).hexdigest()
        suffix = "" if entry.method in _NESTED_METHODS else f"-r{entry.rank}"
        folder = _safe_name(fingerprint)
        name = (f"L{layer}-{_safe_name(tensor, 24)}-{_safe_name(entry.method, 16)}{suffix}-"
                f"{uuid.uuid4().hex[:12]}.safetensors")
        file = f"{folder}/{name}"
        try:
            conn = self._connect(create=True, repair=True)
            assert conn is not None
            (self.root / folder).mkdir(exist_ok=True)
            _atomic_write(self.root / file, data)
            now = time.time()
            with self._transaction(conn):
                old = conn.execute("SELECT rank, file FROM entries WHERE key = ?",
                                   (key,)).fetchone()
                if old is not None and entry.method in _NESTED_METHODS and old[0] >= entry.rank:
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
            self._evict(conn, keep=key)
        except (OSError, sqlite3.Error) as exc:
            self._unlink(file)
            self._disk_failed("write to", exc)

    def _touch(self, key: str) -> None:
        if not self._disk_ok:
            return
        try:
            conn = self._connect(create=False, repair=False)
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

    def _evict(self, conn: sqlite3.Connection, *, keep: str) -> None:
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

    # ------------------------------------------------------------------ inspection

    def info(self) -> CacheInfo:
        """Entries and bytes on disk, per model fingerprint.

        Raises:
            StorageError: the root is not a directory, or the index is unreadable.
        """
        with self._lock:
            self._check_root()
            try:
                conn = self._connect(create=False, repair=False)
                rows = [] if conn is None else conn.execute(
                    "SELECT fingerprint, COUNT(*), SUM(nbytes), MAX(label) FROM entries "
                    "GROUP BY fingerprint ORDER BY fingerprint"
                ).fetchall()
            except sqlite3.Error as exc:
                raise StorageError(
                    f"factor cache index {self.index_path} is unreadable ({exc}); "
                    f"run `dse cache clear --cache-dir {self.root.parent}`"
                ) from None
            models = {fp: ModelUsage(entries=n, bytes=b, label=lab) for fp, n, b, lab in rows}
            return CacheInfo(
                root=self.root, entries=sum(m.entries for m in models.values()),
                bytes=sum(m.bytes for m in models.values()), max_bytes=self.max_bytes,
                models=models,
            )

    def clear(self) -> CacheInfo:
        """Delete every entry (memory and disk) and return what the disk held before.

        Only the cache's own files are removed (the index and ``*.safetensors`` under
        the root), never anything else in the directory.
        """
        with self._lock:
            self._memory.clear()
            self._check_root()
            try:
                before = self.info()
            except StorageError:
                before = CacheInfo(root=self.root, entries=0, bytes=0,
                                   max_bytes=self.max_bytes, models={})
            self.close()
            if self.root.is_dir():
                self._remove_all_files()
            self._disk_ok = True
            return before

    def _remove_all_files(self) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            (self.root / (INDEX_NAME + suffix)).unlink(missing_ok=True)
        for folder in [p for p in self.root.iterdir() if p.is_dir()]:
            for path in folder.iterdir():
                if path.name.endswith((".safetensors", ".safetensors.tmp")):
                    path.unlink(missing_ok=True)
            with suppress(OSError):  # not ours, or not empty: leave it
                folder.rmdir()


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
