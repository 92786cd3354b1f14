"""SVD-LLM (Wang et al. 2024): truncation-aware whitening with the Cholesky factor of XᵀX.

With XᵀX = L Lᵀ (X: calibration inputs, tokens × W), the layer's output error of any
approximation Ŵ is ‖(W − Ŵ) Xᵀ‖_F = ‖(W − Ŵ) L‖_F. So the truncated SVD of W·L is the
best rank-k approximation *in output space*, and its error is exactly the discarded
singular values: ‖(W − Ŵ_k) Xᵀ‖_F² = Σ_{i>k} σ_i(W·L)². The factors are U_kΣ_k and
V_kᵀ L⁻¹, the latter by a triangular solve (never an explicit inverse).

XᵀX is singular when some input direction never occurs in the calibration data; a
diagonal jitter (relative to the mean diagonal, growing tenfold per try) is then added
and recorded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from space.errors import CalibrationError

if TYPE_CHECKING:
    import torch

    from dse.calibration import InputStats
    from dse.methods import TwoFactors

#: Relative jitters tried in turn (times the mean diagonal of XᵀX) after a plain attempt.
JITTERS = (1e-8, 1e-6, 1e-4, 1e-2)

__all__ = ["JITTERS", "cholesky_with_jitter", "whitened_factors"]


def cholesky_with_jitter(gram: torch.Tensor) -> tuple[torch.Tensor, float] | None:
    """Lower L with L Lᵀ = XᵀX + εI, in float64, and the ε used; None if every try fails."""
    import torch

    gram = gram.double()
    gram = (gram + gram.T) / 2
    scale = float(gram.diagonal().mean()) or 1.0
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    for relative in (0.0, *JITTERS):
        jitter = relative * scale
        chol, info = torch.linalg.cholesky_ex(gram + jitter * eye if jitter else gram)
        if int(info) == 0 and bool(torch.isfinite(chol).all()):
            return chol, jitter
    return None


def whitened_factors(
    weight: torch.Tensor, rank: int, stats: InputStats, *, allow_svd_fallback: bool = False
) -> TwoFactors:
    """A = U_kΣ_k and b = (V_kᵀ L⁻¹)ᵀ of the truncated SVD of W·L.

    Raises:
        CalibrationError: XᵀX is not positive definite even with the largest jitter and
            ``allow_svd_fallback`` is off (with it, the plain SVD of W is returned).
    """
    import torch

    from dse.decompose import truncated_svd
    from dse.methods import TwoFactors, result_dtype

    dtype = result_dtype(weight)
    found = cholesky_with_jitter(stats.gram.to(weight.device))
    if found is None:
        if not allow_svd_fallback:
            raise CalibrationError(
                f"svd-llm: the calibration Gram XᵀX ({stats.gram.shape[0]}×{stats.gram.shape[0]})"
                f" is not positive definite even with a jitter of {JITTERS[-1]:g}× its mean "
                f"diagonal; use more calibration tokens, another method, or allow the svd "
                f"fallback ([calibration] svd_fallback = true)"
            )
        triplets = truncated_svd(weight.detach().double(), rank)
        a = triplets.u * triplets.s
        return TwoFactors(a.to(dtype).contiguous(), triplets.v.to(dtype).contiguous(), -1.0)
    chol, jitter = found
    triplets = truncated_svd(weight.detach().double() @ chol, rank)
    a = triplets.u * triplets.s
    # b = (V_kᵀ L⁻¹)ᵀ = L⁻ᵀ V_k: solve Lᵀ b = V_k (upper triangular).
    b = torch.linalg.solve_triangular(chol.T, triplets.v, upper=True)
    return TwoFactors(a.to(dtype).contiguous(), b.to(dtype).contiguous(), jitter)
