"""Data-aware and run-time decomposition methods beside plain ``svd`` and ``hooi``.

Every weight method here yields two nested factors of an H×W weight, ``a`` (H×k) and
``b`` (W×k) with ``W ≈ a @ b.T``, whose first r columns are the method's rank-r answer
(each is a truncated SVD or eigendecomposition of a transformed matrix), so one entry
of the factor cache serves every lower rank. They are installed as the existing
:class:`~dse.layers.FactorizedLinear` in its two-factor (folded) form:

* ``asvd`` — activation-aware scaling (ASVD, Yuan et al. 2023), :mod:`.asvd`;
* ``svd-llm`` — truncation-aware whitening (SVD-LLM, Wang et al. 2024), :mod:`.whitening`;
* ``feature`` — output feature-space projection (SFSD-LLM), :mod:`.feature`.

``activation`` changes no weight: :class:`.activation.ActivationLowRankLinear`
approximates each forward's input at rank k instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from space.config import METHOD_NAMES, TWO_FACTOR_METHODS
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

    from dse.calibration import InputStats
    from dse.decompose import TuckerFactors

__all__ = [
    "METHOD_NAMES",
    "CALIBRATED_METHODS",
    "TWO_FACTOR_METHODS",
    "TwoFactors",
    "check_method",
    "two_factors",
]

#: Methods that need calibration statistics of the layer's inputs.
CALIBRATED_METHODS = TWO_FACTOR_METHODS


class TwoFactors(NamedTuple):
    """Nested two-factor form: ``W ≈ a[:, :r] @ b[:, :r].T`` for every r ≤ k."""

    a: torch.Tensor  # H × k  (U_kΣ_k, or V_k for ``feature``)
    b: torch.Tensor  # W × k  ((V_kᵀ S⁻¹)ᵀ, (V_kᵀ L⁻¹)ᵀ, or (V_kᵀ W)ᵀ)
    jitter: float = 0.0  # diagonal added before a Cholesky succeeded (svd-llm)

    @property
    def rank(self) -> int:
        return int(self.a.shape[1])

    def factors(self, rank: int | None = None) -> TuckerFactors:
        """Tucker factors with an identity core, to be installed folded (two matrices)."""
        import torch

        from dse.decompose import TuckerFactors

        r = self.rank if rank is None else rank
        if not 1 <= r <= self.rank:
            raise InvalidConfigError(f"rank must be between 1 and the {self.rank} stored, got {r}")
        eye = torch.eye(r, dtype=self.a.dtype, device=self.a.device)
        return TuckerFactors(self.a[:, :r].contiguous(), eye, self.b[:, :r].contiguous())


def check_method(method: str) -> None:
    """Raise one line naming the allowed methods unless ``method`` is known."""
    if method not in METHOD_NAMES:
        raise InvalidConfigError(
            f"unknown decomposition method {method!r}; allowed: {', '.join(sorted(METHOD_NAMES))}"
        )


def two_factors(
    weight: torch.Tensor, rank: int, method: str, stats: InputStats, *, alpha: float = 0.5,
    bias: torch.Tensor | None = None, allow_svd_fallback: bool = False,
) -> TwoFactors:
    """The rank-``rank`` two factors of ``weight`` by a calibrated ``method``.

    Args:
        weight: the H×W weight (computed in float64, returned in float32 or float64).
        rank: 1 ≤ rank ≤ min(H, W).
        method: ``asvd``, ``svd-llm`` or ``feature``.
        stats: the calibration statistics of the layer's input.
        alpha: the ASVD exponent of the scaling.
        bias: the layer's bias (the ``feature`` output covariance includes it).
        allow_svd_fallback: where svd-llm's Cholesky fails even with jitter, use plain
            ``svd`` for this tensor instead of raising.

    Raises:
        InvalidConfigError: unknown method, bad rank, or statistics of the wrong width.
        CalibrationError: the Cholesky failed and no fallback was allowed.
    """
    from dse.decompose import check_weight_rank

    check_weight_rank(weight, rank)
    if int(stats.gram.shape[0]) != int(weight.shape[1]):
        raise InvalidConfigError(
            f"calibration statistics are for inputs of width {stats.gram.shape[0]}, "
            f"the weight is {weight.shape[0]}×{weight.shape[1]}"
        )
    if method == "asvd":
        from dse.methods.asvd import asvd_factors

        return asvd_factors(weight, rank, stats, alpha=alpha)
    if method == "svd-llm":
        from dse.methods.whitening import whitened_factors

        return whitened_factors(weight, rank, stats, allow_svd_fallback=allow_svd_fallback)
    if method == "feature":
        from dse.methods.feature import feature_factors

        return feature_factors(weight, rank, stats, bias=bias)
    check_method(method)
    raise InvalidConfigError(f"method {method!r} does not compute calibrated weight factors")


def result_dtype(weight: torch.Tensor) -> torch.dtype:
    """float64 weights stay float64; the factors of any other weight are float32."""
    import torch

    return torch.float64 if weight.dtype == torch.float64 else torch.float32
