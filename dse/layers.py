"""FactorizedLinear: a linear layer held as Tucker factors, y = ((x·U2)·Γᵀ)·U1ᵀ + b.

The dense weight W = U1·Γ·U2ᵀ is never rebuilt: the layer runs three small matrix
products, which is where the decomposition saves memory traffic (the paper's point:
LMs are memory-bound). For n tokens the chain costs n·(W·r + r² + r·H) multiply-adds.
When n exceeds min(H, W), folding Γ into the smaller factor first (min(H, W)·r² once)
is cheaper than n·r², so the forward pass picks that order then; results agree to
rounding.

``fold=True`` stores Γ folded into U1 (U1' = U1·Γ) and runs two products. Trade-off:
one kernel launch and r² multiply-adds per token fewer (measurable only for small
matrices on a GPU), but the module then holds H·r + r·W parameters, not the paper's
H·r + r² + r·W, so parameter counts and reductions differ from the design space's
formula by r² per tensor. The default keeps the paper's form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own convention

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.decompose import TuckerFactors

__all__ = ["FactorizedLinear"]


class FactorizedLinear(nn.Module):
    """A drop-in for ``nn.Linear(W, H)`` whose weight is ``u1 @ core @ u2.T``.

    Args:
        u1: H×r output factor.
        core: r×r core Γ.
        u2: W×r input factor.
        bias: optional H bias (copied into a parameter).
        fold: fold Γ into ``u1`` and keep two factors (see the module notes).

    Raises:
        InvalidConfigError: the shapes, dtypes or devices of the factors disagree.
    """

    def __init__(
        self, u1: torch.Tensor, core: torch.Tensor, u2: torch.Tensor,
        bias: torch.Tensor | None = None, *, fold: bool = False,
    ) -> None:
        super().__init__()
        _check_factors(u1, core, u2, bias)
        with torch.no_grad():
            if fold:
                u1 = u1 @ core
            self.u1 = nn.Parameter(u1.detach().clone().contiguous())
            self.u2 = nn.Parameter(u2.detach().clone().contiguous())
            if fold:
                self.register_parameter("core", None)
            else:
                self.core = nn.Parameter(core.detach().clone().contiguous())
            if bias is None:
                self.register_parameter("bias", None)
            else:
                self.bias = nn.Parameter(bias.detach().clone().contiguous())
        self.folded = fold

    @classmethod
    def from_linear(
        cls, linear: nn.Linear, factors: TuckerFactors, *, fold: bool = False
    ) -> FactorizedLinear:
        """Replace ``linear`` by its factors; they move to the weight's device and dtype.

        Raises:
            InvalidConfigError: the factors do not approximate an H×W = out×in weight.
        """
        weight = linear.weight
        expected = (linear.out_features, linear.in_features)
        got = (int(factors.u1.shape[0]), int(factors.u2.shape[0]))
        if got != expected:
            raise InvalidConfigError(
                f"factors for a {got[0]}×{got[1]} weight cannot replace a linear layer with "
                f"weight {expected[0]}×{expected[1]} (out×in)"
            )
        u1, core, u2 = (t.to(device=weight.device, dtype=weight.dtype) for t in factors)
        layer = cls(u1, core, u2, linear.bias, fold=fold)
        layer.requires_grad_(weight.requires_grad)
        return layer

    @property
    def in_features(self) -> int:
        return int(self.u2.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.u1.shape[0])

    @property
    def rank(self) -> int:
        return int(self.u1.shape[1])

    @property
    def weight_shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    def dense_weight(self) -> torch.Tensor:
        """W = U1·Γ·U2ᵀ, for checks only: the forward pass never builds it."""
        left = self.u1 if self.core is None else self.u1 @ self.core
        return left @ self.u2.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // max(self.in_features, 1)
        if self.core is None:
            return F.linear(F.linear(x, self.u2.T), self.u1, self.bias)
        if tokens <= min(self.in_features, self.out_features):
            # ((x·U2)·Γᵀ)·U1ᵀ: n·(W·r + r² + r·H).
            return F.linear(F.linear(F.linear(x, self.u2.T), self.core), self.u1, self.bias)
        if self.in_features <= self.out_features:
            # (x·(U2·Γᵀ))·U1ᵀ: W·r² once, then n·(W·r + r·H).
            return F.linear(F.linear(x, (self.u2 @ self.core.T).T), self.u1, self.bias)
        # (x·U2)·(U1·Γ)ᵀ: H·r² once, then n·(W·r + r·H).
        return F.linear(F.linear(x, self.u2.T), self.u1 @ self.core, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, bias={self.bias is not None}, fold={self.folded}"
        )


def _check_factors(
    u1: torch.Tensor, core: torch.Tensor, u2: torch.Tensor, bias: torch.Tensor | None
) -> None:
    if u1.ndim != 2 or core.ndim != 2 or u2.ndim != 2:
        raise InvalidConfigError(
            f"factors must be matrices, got u1 {tuple(u1.shape)}, core {tuple(core.shape)}, "
            f"u2 {tuple(u2.shape)}"
        )
    rank = u1.shape[1]
    if tuple(core.shape) != (rank, rank) or u2.shape[1] != rank:
        raise InvalidConfigError(
            f"factor shapes disagree: u1 {tuple(u1.shape)} (H×r), core {tuple(core.shape)} "
            f"(r×r), u2 {tuple(u2.shape)} (W×r)"
        )
    tensors = [u1, core, u2] + ([bias] if bias is not None else [])
    if len({t.dtype for t in tensors}) != 1 or len({t.device for t in tensors}) != 1:
        raise InvalidConfigError(
            "factors (and bias) must share one dtype and device, got "
            + ", ".join(f"{t.dtype} on {t.device}" for t in tensors)
        )
    if bias is not None and tuple(bias.shape) != (u1.shape[0],):
        raise InvalidConfigError(
            f"bias must have H = {u1.shape[0]} entries, got shape {tuple(bias.shape)}"
        )
