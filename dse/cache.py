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
Cholesky jitter), computed up to the rank of keep 1 where the SVD is a full one anyway
(``cache_entries.stored_rank``: a study climbing in keep decomposes each tensor once),
and are keyed by their calibration too (``variant``: the statistics'
key and method options), so one method or calibration never answers for another.

Entries are keyed by the model's fingerprint (a hash of its weights, not its name).
The parts: ``cache_entries`` (what an entry holds, computing one, the counters and
reports), ``cache_disk`` (files on disk, checked on every read, LRU eviction) and
``cache_index`` (the SQLite index several processes share); this module is the
lookup that goes memory → disk → decomposition.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from dse.cache_disk import DiskStore
from dse.cache_entries import (
    NESTED_METHODS,
    CacheInfo,
    CacheStats,
    Entry,
    FactorLookup,
    ModelUsage,
    compute_entry,
)
from dse.cache_index import INDEX_NAME, SCHEMA_VERSION
from space.config import TWO_FACTOR_METHODS
from space.errors import InvalidConfigError

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
    "INDEX_NAME",
]

DEFAULT_MAX_BYTES = 2 * 1024**3
DEFAULT_MEMORY_BYTES = 1024**3
# A memory hit refreshes the entry's disk LRU stamp at most this often (seconds).
_TOUCH_INTERVAL = 60.0


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
        self._memory: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.RLock()
        self._disk = DiskStore(self.root, max_bytes, self.stats)

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
            self._disk.index.close()


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
                entry = self._disk.get(key, rank, shape, method)
                source = "disk"
                if entry is not None:
                    self._memory_put(key, entry)
            decompose_seconds = 0.0
            if entry is None:
                source = "computed"
                entry, decompose_seconds = self._compute(weight, rank, method, compute)
                self._memory_put(key, entry)
                self._disk.put(key, entry, fingerprint, layer, tensor, label, decompose_seconds)
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
        return key if method in NESTED_METHODS else f"{key}/r{rank}"


    def _compute(self, weight: torch.Tensor, rank: int, method: str,
                 compute: Callable[[int], TwoFactors] | None = None) -> tuple[Entry, float]:
        entry, seconds = compute_entry(weight, rank, method, compute)
        self.stats.decompositions += 1
        self.stats.decompose_seconds += seconds
        return entry, seconds

    # ------------------------------------------------------------------ memory layer

    def _memory_get(self, key: str, rank: int, shape: tuple[int, int]) -> Entry | None:
        entry = self._memory.get(key)
        if entry is None or not entry.serves(rank, shape):
            return None
        self._memory.move_to_end(key)
        now = time.monotonic()
        if now - entry.touched > _TOUCH_INTERVAL:
            entry.touched = now
            self._disk.touch(key)
        return entry

    def _memory_put(self, key: str, entry: Entry) -> None:
        self._memory[key] = entry
        self._memory.move_to_end(key)
        total = sum(e.nbytes for e in self._memory.values())
        while total > self.memory_bytes and len(self._memory) > 1:
            _, dropped = self._memory.popitem(last=False)
            total -= dropped.nbytes

    # ------------------------------------------------------------------ disk layer

    @property
    @property
    def index_path(self) -> Path:
        """The SQLite index of the disk layer."""
        return self._disk.index.path

    def check_writable(self) -> None:
        """Fail now, in one line, if the cache directory cannot be created or written (see ``CacheIndex``).

        Raises:
            StorageError: the directory is (under) a file, or is not writable.
        """
        self._disk.index.check_writable()

    def info(self) -> CacheInfo:
        """Entries and bytes on disk, per model fingerprint.

        Raises:
            StorageError: the root is not a directory, or the index is unreadable.
        """
        with self._lock:
            return self._disk.info()

    def clear(self) -> CacheInfo:
        """Delete every entry (memory and disk) and return what the disk held before.

        Only the cache's own files are removed (the index and ``*.safetensors`` under
        the root), never anything else in the directory.
        """
        with self._lock:
            self._memory.clear()
            return self._disk.clear()
