"""What the factor cache holds and reports: one entry's factors, its counters and reports.

An entry is what one (model, layer, tensor, method[, rank]) key stores: the leading
singular triplets for ``svd`` (nested, so one serves every lower rank), two nested
factors for the calibrated methods, or the Tucker factors of one rank (``hooi``).
:func:`compute_entry` makes one; :class:`dse.cache.FactorCache` keeps them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

from space.config import TWO_FACTOR_METHODS

if TYPE_CHECKING:
    import torch

    from dse.decompose import TuckerFactors
    from dse.methods import TwoFactors

__all__ = ["CacheStats", "FactorLookup", "ModelUsage", "CacheInfo", "Entry", "NESTED_METHODS",
           "expected_shapes", "compute_entry", "stored_rank"]

# Methods whose factors of a lower rank are a slice of those of a higher rank.
NESTED_METHODS = frozenset({"svd"}) | TWO_FACTOR_METHODS


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
class Entry:
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
        """Whether this entry answers ``rank`` for a weight of ``shape`` (a nested entry: any rank ≤ its own)."""
        if self.shape != shape:
            return False
        return self.rank >= rank if self.method in NESTED_METHODS else self.rank == rank

    def factors(self, rank: int) -> TuckerFactors:
        """The factors at ``rank`` (sliced from a nested entry)."""
        from dse.decompose import SingularTriplets, TuckerFactors
        from dse.methods import TwoFactors

        if self.method in TWO_FACTOR_METHODS:
            return TwoFactors(self.tensors["a"], self.tensors["b"]).factors(rank)
        if self.method in NESTED_METHODS:
            t = self.tensors
            return SingularTriplets(t["u"], t["s"], t["v"]).factors(rank)
        return TuckerFactors(self.tensors["u1"], self.tensors["core"], self.tensors["u2"])


def expected_shapes(method: str, rank: int, shape: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """The tensors an entry of ``method`` at ``rank`` holds for an H×W weight, with their shapes."""
    height, width = shape
    if method in TWO_FACTOR_METHODS:
        return {"a": (height, rank), "b": (width, rank), "jitter": (1,)}
    if method in NESTED_METHODS:
        return {"u": (height, rank), "s": (rank,), "v": (width, rank)}
    return {"u1": (height, rank), "core": (rank, rank), "u2": (width, rank)}


def stored_rank(shape: tuple[int, int], rank: int) -> int:
    """The rank a calibrated method's entry is computed at when ``rank`` is asked.

    Where the SVD is a full one anyway (min(H, W) ≤ ``FULL_SVD_MAX_DIM``), keep the
    factors up to the rank of a kept-parameter ratio of 1: every ratio a keep-ratio study
    can ask is then a slice of the first entry, instead of each higher ratio decomposing
    again and replacing it (the cost is the same SVD; the entry is the weight's size).
    """
    from dse.decompose import FULL_SVD_MAX_DIM

    height, width = shape
    if min(shape) > FULL_SVD_MAX_DIM:
        return rank
    return max(rank, min(height, width, height * width // (height + width)))


def compute_entry(weight: torch.Tensor, rank: int, method: str,
                  compute: Callable[[int], TwoFactors] | None = None) -> tuple[Entry, float]:
    """Decompose ``weight`` into a new entry (on the CPU); and the seconds it took."""
    import torch

    from dse.decompose import decompose, truncated_svd

    start = time.perf_counter()
    shape = (int(weight.shape[0]), int(weight.shape[1]))
    if method in TWO_FACTOR_METHODS:
        assert compute is not None
        rank = stored_rank(shape, rank)
        two = compute(rank)
        tensors = {"a": two.a, "b": two.b,
                   "jitter": torch.tensor([two.jitter], dtype=torch.float64)}
    elif method in NESTED_METHODS:
        triplets = truncated_svd(weight, rank)
        tensors = {"u": triplets.u, "s": triplets.s, "v": triplets.v}
    else:
        # Keep hooi's factors in float32 (or float64) whatever the model's dtype.
        work = weight if weight.dtype.is_floating_point and weight.element_size() >= 4 \
            else weight.float()
        factors = decompose(work, rank, method=method)
        tensors = {"u1": factors.u1, "core": factors.core, "u2": factors.u2}
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return Entry(method=method, rank=rank, shape=shape, tensors=tensors), time.perf_counter() - start
