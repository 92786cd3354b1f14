"""ASVD (Yuan et al. 2023): scale the input channels by their mean magnitude before the SVD.

With S = diag(mean |x|)^alpha, the truncated SVD of W·S weights the columns of W by how
strongly the layer's inputs drive them; dividing the right factor by S undoes the
scaling exactly, so ``a @ b.T = U_kΣ_k V_kᵀ S⁻¹`` approximates W and at full rank is W.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

    from dse.calibration import InputStats
    from dse.methods import TwoFactors

#: Channels that never fired get this scale (relative to the largest), not zero.
MIN_SCALE = 1e-6


def asvd_scale(stats: InputStats, alpha: float) -> torch.Tensor:
    """S's diagonal, mean |x| ** alpha in float64; silent channels clamped to stay invertible."""
    if not alpha >= 0.0:
        raise InvalidConfigError(f"ASVD alpha must be non-negative, got {alpha}")
    mean_abs = stats.abs_mean.double()
    floor = MIN_SCALE * float(mean_abs.max()) if float(mean_abs.max()) > 0 else 1.0
    return mean_abs.clamp(min=floor) ** alpha


def asvd_factors(weight: torch.Tensor, rank: int, stats: InputStats, *, alpha: float) -> TwoFactors:
    """A = U_kΣ_k, b = (V_kᵀ S⁻¹)ᵀ of the truncated SVD of W·S."""
    from dse.decompose import truncated_svd
    from dse.methods import TwoFactors, result_dtype

    scale = asvd_scale(stats, alpha).to(weight.device)
    scaled = weight.detach().double() * scale  # W·S: column j times s_j
    triplets = truncated_svd(scaled, rank)
    a = triplets.u * triplets.s
    b = triplets.v / scale[:, None]  # (V_kᵀ S⁻¹)ᵀ = S⁻¹ V_k
    dtype = result_dtype(weight)
    return TwoFactors(a.to(dtype).contiguous(), b.to(dtype).contiguous())


__all__ = ["asvd_factors", "asvd_scale", "MIN_SCALE"]

