"""Run-time decomposition of a layer's input (the D-com seed): no weight changes.

Each forward approximates the input X (n tokens × W, per sequence) at rank k by a few
subspace (block power) iterations, X ≈ Q (Qᵀ X) with Q (n×k) orthonormal, and computes
Y = Q ((Qᵀ X) Wᵀ): the (U_kΣ_k)(V_kᵀ Wᵀ) chain. The weight is kept whole, so the
parameter count does not change; what changes is the work per forward, which the
latency and energy objectives measure (the seed reports +38 % end-to-end on an A100
without hardware support). Where k ≥ min(n, W) the approximation would be exact, and
at the weight's full rank k = min(H, W) the method is defined as off; both compute the
exact product.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own convention

from space.errors import InvalidConfigError

__all__ = ["ActivationLowRankLinear", "DEFAULT_ITERATIONS"]

#: Subspace iterations per forward: two power steps after the sketch.
DEFAULT_ITERATIONS = 2


class ActivationLowRankLinear(nn.Module):
    """A drop-in for an ``nn.Linear`` that multiplies a rank-k approximation of its input.

    Args:
        linear: the original layer; its weight and bias are shared, not copied.
        rank: k, 1 ≤ k ≤ min(H, W).
        iterations: subspace iterations per forward.
        seed: seed of the sketch, so repeated forwards agree bit for bit.
    """

    def __init__(self, linear: nn.Linear, rank: int, *, iterations: int = DEFAULT_ITERATIONS,
                 seed: int = 0) -> None:
        super().__init__()
        limit = min(linear.in_features, linear.out_features)
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= limit:
            raise InvalidConfigError(f"rank must be an integer between 1 and {limit}, got {rank!r}")
        if iterations < 0:
            raise InvalidConfigError(f"iterations must be non-negative, got {iterations}")
        self.weight = linear.weight
        self.bias = linear.bias
        self.rank = rank
        self.iterations = iterations
        self.seed = seed

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def low_rank_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Q (…, n×k) and Qᵀ X (…, k×W) with X ≈ Q Qᵀ X, per leading batch entry."""
        n = x.shape[-2]
        k = min(self.rank, n)
        generator = torch.Generator(device=x.device).manual_seed(self.seed)
        omega = torch.randn(x.shape[-1], k, generator=generator, device=x.device,
                            dtype=torch.float32).to(x.dtype)
        q, _ = torch.linalg.qr((x @ omega).float())
        for _ in range(self.iterations):
            z = x.transpose(-1, -2).float() @ q
            q, _ = torch.linalg.qr(x.float() @ z)
        q = q.to(x.dtype)
        return q, q.transpose(-1, -2) @ x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = min(self.in_features, self.out_features)
        if x.ndim < 2 or self.rank >= min(x.shape[-2], x.shape[-1]) or self.rank >= full:
            return F.linear(x, self.weight, self.bias)
        q, coefficients = self.low_rank_input(x)
        return _add_bias(q @ F.linear(coefficients, self.weight), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, iterations={self.iterations}")


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return y if bias is None else y + bias
