"""Feature-space decomposition (SFSD-LLM's ``DecomposeLinearEigen``): project the outputs.

The layer's outputs Y = X Wᵀ (+ b) on calibration data span few directions; with V_k
the top-k eigenvectors of YᵀY, W ≈ V_k (V_kᵀ W): the output is projected onto its
principal subspace, P = V_k V_kᵀ (a projector, P² = P). YᵀY is not hooked separately:
it follows exactly from the input statistics, YᵀY = W XᵀX Wᵀ + W s bᵀ + b sᵀ Wᵀ + n b bᵀ
(s = Σx, n tokens), which linears that read one input share.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from dse.calibration import InputStats
    from dse.methods import TwoFactors

__all__ = ["output_covariance", "feature_factors"]


def output_covariance(
    weight: torch.Tensor, stats: InputStats, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """YᵀY of the layer's calibration outputs (H×H, float64), from its input statistics."""
    w = weight.detach().double()
    gram = stats.gram.to(w.device).double()
    cov = w @ gram @ w.T
    if bias is not None:
        b = bias.detach().double().to(w.device)
        ws = w @ stats.total.to(w.device).double()
        cov = cov + ws[:, None] * b[None, :] + b[:, None] * ws[None, :]
        cov = cov + stats.tokens * (b[:, None] * b[None, :])
    return (cov + cov.T) / 2


def feature_factors(
    weight: torch.Tensor, rank: int, stats: InputStats, *, bias: torch.Tensor | None = None
) -> TwoFactors:
    """A = V_k (top-k eigenvectors of YᵀY, largest first), b = (V_kᵀ W)ᵀ."""
    import torch

    from dse.methods import TwoFactors, result_dtype

    _, vectors = torch.linalg.eigh(output_covariance(weight, stats, bias))
    top = vectors.flip(1)[:, :rank]  # eigh sorts ascending
    b = weight.detach().double().T @ top
    dtype = result_dtype(weight)
    return TwoFactors(top.to(dtype).contiguous(), b.to(dtype).contiguous())
