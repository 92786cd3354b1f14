"""Tucker factors of a weight matrix: W (H×W) ≈ U1 · Γ · U2ᵀ, by SVD or by HOOI.

For a 2-D weight the best rank-r Tucker approximation in the Frobenius norm is the
truncated SVD (Eckart–Young), so the default ``svd`` method computes exactly that
(:mod:`dse.svd`: full or randomized), and ``hooi`` (the paper's Algorithm 1, run by
tensorly) must reach the same error. Both are registered in :data:`METHODS`, so an
unknown method name gets a one-line answer. The factor types and error measures live in
:mod:`dse.factors` and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from dse.factors import (
    SingularTriplets,
    TuckerFactors,
    check_weight_rank,
    compute_dtype,
    optimal_relative_error,
    relative_error,
)
from dse.svd import FULL_SVD_MAX_DIM, RANDOMIZED_EXCESS_TOL, RANDOMIZED_MAX_ITER, truncated_svd
from space.errors import InvalidConfigError
from space.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = [
    "TuckerFactors",
    "SingularTriplets",
    "METHODS",
    "decompose",
    "truncated_svd",
    "check_weight_rank",
    "relative_error",
    "optimal_relative_error",
    "FULL_SVD_MAX_DIM",
    "RANDOMIZED_MAX_ITER",
    "RANDOMIZED_EXCESS_TOL",
]


def _svd_method(matrix: torch.Tensor, rank: int, *, tol: float, max_iter: int) -> TuckerFactors:
    """Eckart–Young: the truncated SVD is the optimal rank-r Tucker form of a matrix."""
    return truncated_svd(matrix, rank).factors(rank)


def _hooi_method(matrix: torch.Tensor, rank: int, *, tol: float, max_iter: int) -> TuckerFactors:
    """The paper's Algorithm 1 (HOOI) by ``tensorly.decomposition.tucker``, torch backend.

    tensorly initializes the factors from the SVDs of the unfoldings (HOSVD) and then
    alternates truncated SVDs until the reconstruction error changes by less than
    ``tol`` or ``max_iter`` sweeps ran; its ``svd_flip`` fixes the signs.
    """
    import tensorly
    from tensorly.decomposition import tucker

    with tensorly.backend_context("pytorch", local_threadsafe=True):
        core, (u1, u2) = tucker(
            matrix, rank=[rank, rank], n_iter_max=max_iter, tol=tol, init="svd"
        )
    return TuckerFactors(u1.contiguous(), core.contiguous(), u2.contiguous())


DecomposeFn = Callable[..., TuckerFactors]

#: Decomposition methods by name: ``fn(matrix, rank, *, tol, max_iter) -> TuckerFactors``.
METHODS: Registry[DecomposeFn] = Registry("decomposition method")
METHODS.register("svd", _svd_method)
METHODS.register("hooi", _hooi_method)


def decompose(
    weight: torch.Tensor, rank: int, *, method: str = "svd", tol: float = 1e-6,
    max_iter: int = 100,
) -> TuckerFactors:
    """Tucker factors of rank ``rank``: ``weight ≈ u1 @ core @ u2.T``.

    Args:
        weight: an H×W floating-point matrix (an ``nn.Linear`` weight: out × in).
        rank: the pruned rank PR, 1 ≤ PR ≤ min(H, W).
        method: a name in :data:`METHODS`: ``svd`` (default; optimal, fast) or ``hooi``.
        tol: HOOI stops when the relative reconstruction error changes by less.
        max_iter: the most HOOI sweeps.

    Returns:
        Factors on the weight's device, in the weight's dtype (computed in float32, or
        float64 for a float64 weight).

    Raises:
        InvalidConfigError: the weight is not a floating 2-D tensor, the rank is out of
            range, or tol/max_iter are not positive.
        UnknownNameError: ``method`` is not registered.
    """
    import torch

    fn = METHODS.get(method)
    check_weight_rank(weight, rank)
    if not tol > 0:
        raise InvalidConfigError(f"tol must be positive, got {tol}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise InvalidConfigError(f"max_iter must be a positive integer, got {max_iter!r}")
    with torch.no_grad():
        matrix = weight.detach().to(compute_dtype(weight))
        factors = fn(matrix, rank, tol=tol, max_iter=max_iter)
    return factors.to(device=weight.device, dtype=weight.dtype)

