"""The size of the design space: Theorem 1 exactly, and brute force for tiny specs.

Two ways to choose the pruned rank are counted:

* ``fixed=False`` ("any rank up to R"): PR may be any of 1..R, the same for every
  decomposed tensor (the paper's uniform decomposition). R = 1 is Table II.
* ``fixed=True`` ("one fixed rank"): PR is exactly R; one rank choice.

Either way a γ is homogeneous: the same tensors and the same rank in every decomposed
layer, as Theorem 1 assumes. The original model counts once (the "+1").
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from itertools import combinations

from pydantic import BaseModel, ConfigDict

from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.spec import ModelSpec

__all__ = [
    "SpaceSize",
    "theorem1_size",
    "space_size",
    "size_report",
    "log2_size",
    "base_ranks",
    "count_layer_sets",
    "count_configs",
    "tensor_subsets",
    "enumerate_space",
    "ENUMERATION_LIMIT",
]

# Brute force refuses spaces larger than this: it exists to check the formulas on tiny specs.
ENUMERATION_LIMIT = 2_000_000

# Tensor subsets are listed explicitly (2^N of them); real families have 6-7 tensors.
_MAX_TENSORS = 20


class SpaceSize(BaseModel):
    """The size of one model's full design space under one rank choice."""

    model_config = ConfigDict(frozen=True)

    model: str
    n_layers: int
    n_tensors: int
    rank: int
    fixed: bool
    size: int
    log2_size: float
    theorem1: int  # the paper's formula with rank(l, k) = number of rank choices


def log2_size(n: int) -> float | None:
    """log2 of an exact count (Python ints of any size); None for an empty space."""
    return math.log2(n) if n > 0 else None


def theorem1_size(n_layers: int, n_tensors: int, n_ranks: int = 1) -> int:
    """Theorem 1 as printed: ``(2^N_tensors − 1)(2^N_layers − 1)·rank + 1``.

    Notes:
        Choose a non-empty set of layers (2^N_layers − 1 ways), a non-empty set of
        tensors (2^N_tensors − 1 ways) and one of ``n_ranks`` pruned ranks; every empty
        choice is the same original model, counted once. The formula is exact only
        when every tensor admits every rank choice; :func:`space_size` drops the
        (tensor set, rank) pairs where a rank exceeds some tensor's min(H, W).
    """
    if n_layers < 0 or n_tensors < 0 or n_ranks < 0:
        raise InvalidConfigError(
            f"counts must be non-negative, got layers={n_layers}, tensors={n_tensors}, "
            f"ranks={n_ranks}"
        )
    size: int = (2**n_tensors - 1) * (2**n_layers - 1) * n_ranks + 1
    return size


def _check_rank(spec: ModelSpec, rank: int) -> None:
    largest = max(t.rank for t in spec.tensors)
    if not 1 <= rank <= largest:
        raise InvalidConfigError(
            f"rank {rank} is out of range for {spec.name}: allowed 1..{largest}, the largest "
            f"min(H, W) of its tensors"
        )


def base_ranks(spec: ModelSpec, *, rank: int = 1, fixed: bool = False) -> range:
    """The pruned-rank choices of the space: ``1..rank``, or just ``rank`` when fixed.

    Raises:
        InvalidConfigError: ``rank`` is below 1 or above every tensor's min(H, W).
    """
    _check_rank(spec, rank)
    return range(rank, rank + 1) if fixed else range(1, rank + 1)


def tensor_subsets(spec: ModelSpec) -> Iterator[tuple[str, ...]]:
    """Every non-empty set of tensor names, in the spec's order, smallest sets first."""
    if spec.n_tensors > _MAX_TENSORS:
        raise InvalidConfigError(
            f"{spec.name} has {spec.n_tensors} tensors per layer; at most {_MAX_TENSORS} "
            f"are supported"
        )
    names = spec.tensor_names
    for size in range(1, len(names) + 1):
        yield from combinations(names, size)


def count_layer_sets(layers: Sequence[int], min_gap: int = 1) -> int:
    """Non-empty subsets of ``layers`` whose members are at least ``min_gap`` apart.

    A dynamic program over the sorted layers: ``ending[j]`` counts the valid subsets
    whose largest layer is ``layers[j]``; it is 1 (the layer alone) plus every valid
    subset ending at a layer at least ``min_gap`` below. A prefix sum makes the whole
    count O(n log n) instead of the 2^n subsets.
    """
    ordered = sorted(set(layers))
    if min_gap <= 1:
        subsets: int = 2 ** len(ordered) - 1
        return subsets
    prefix = [0]  # prefix[j] = sum of ending[0..j-1]
    reachable = 0  # how many of the earlier layers are ≤ current − min_gap
    for layer in ordered:
        while reachable < len(prefix) - 1 and ordered[reachable] <= layer - min_gap:
            reachable += 1
        ending = 1 + prefix[reachable]
        prefix.append(prefix[-1] + ending)
    return prefix[-1]


def count_configs(
    spec: ModelSpec,
    *,
    layers: Sequence[int],
    min_gap: int,
    tensor_sets: Iterable[Sequence[str]],
    ranks: Sequence[int],
) -> int:
    """Decomposed γ (the original model excluded) built from the given choices.

    A γ is one layer set (from ``layers``, members ``min_gap`` apart), one tensor set
    from ``tensor_sets``, and one rank from ``ranks`` that every tensor of the set
    admits (rank ≤ min(H, W)). Layers and (tensors, rank) choose independently, so the
    count is a product.
    """
    n_layer_sets = count_layer_sets(layers, min_gap)
    if n_layer_sets == 0:
        return 0
    ordered = sorted(ranks)
    tensor_rank_pairs = 0
    for names in tensor_sets:
        if not names:
            continue
        limit = min(spec.tensor(name).rank for name in names)
        tensor_rank_pairs += _count_at_most(ordered, limit)
    return n_layer_sets * tensor_rank_pairs


def _count_at_most(ordered: Sequence[int], limit: int) -> int:
    from bisect import bisect_right

    return bisect_right(ordered, limit)


def space_size(spec: ModelSpec, *, rank: int = 1, fixed: bool = False) -> int:
    """|S_LR| exactly: every valid homogeneous γ, the original model included.

    Args:
        spec: the architecture.
        rank: R, the largest pruned rank (or the one rank when ``fixed``).
        fixed: count only PR = R instead of PR ∈ 1..R.

    Notes:
        Sort the tensor ranks r_1 ≤ … ≤ r_n. A tensor set admits exactly the ranks up to
        its smallest member's, and 2^(n−i) sets have the i-th tensor as their smallest
        (ties broken by position), so the (tensor set, rank) pairs number
        Σ_i 2^(n−i)·c(r_i), with c(r) the rank choices ≤ r. When every r_i admits every
        choice this is (2^n − 1)·R, and the total is Theorem 1.
    """
    choices = base_ranks(spec, rank=rank, fixed=fixed)
    tensor_ranks = sorted(t.rank for t in spec.tensors)
    n = len(tensor_ranks)
    pairs = sum(
        2 ** (n - i) * _count_at_most(choices, r) for i, r in enumerate(tensor_ranks, start=1)
    )
    size: int = (2**spec.n_layers - 1) * pairs + 1
    return size


def size_report(spec: ModelSpec, *, rank: int = 1, fixed: bool = False) -> SpaceSize:
    """:func:`space_size` with log2 and the paper's formula beside it."""
    size = space_size(spec, rank=rank, fixed=fixed)
    log2 = log2_size(size)
    assert log2 is not None  # the original model is always in the space
    return SpaceSize(
        model=spec.name,
        n_layers=spec.n_layers,
        n_tensors=spec.n_tensors,
        rank=rank,
        fixed=fixed,
        size=size,
        log2_size=log2,
        theorem1=theorem1_size(spec.n_layers, spec.n_tensors, 1 if fixed else rank),
    )


def enumerate_space(
    spec: ModelSpec, *, rank: int = 1, fixed: bool = False, limit: int = ENUMERATION_LIMIT
) -> Iterator[DecompositionConfig]:
    """Every γ of the space, the original model first, by brute force.

    Only for tiny specs: it exists so the tests can check :func:`space_size` and the
    pruned counts of :mod:`space.rules` against the definitions.

    Raises:
        InvalidConfigError: the space holds more than ``limit`` configurations.
    """
    size = space_size(spec, rank=rank, fixed=fixed)
    if size > limit:
        raise InvalidConfigError(
            f"the space of {spec.name} holds {size} configurations; enumeration is limited "
            f"to {limit} (use space_size for the count)"
        )
    choices = base_ranks(spec, rank=rank, fixed=fixed)
    yield DecompositionConfig()
    all_layers = range(spec.n_layers)
    tensor_sets = list(tensor_subsets(spec))
    for n_chosen in range(1, spec.n_layers + 1):
        for layers in combinations(all_layers, n_chosen):
            for names in tensor_sets:
                limit_rank = min(spec.tensor(name).rank for name in names)
                for pruned in choices:
                    if pruned <= limit_rank:
                        yield DecompositionConfig(layers=layers, tensors=names, rank=pruned)
