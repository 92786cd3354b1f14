"""FactorizedExperts: a mixture-of-experts module whose expert matrices are Tucker factors.

transformers 5 stores the experts of Mixtral, Qwen2-MoE and Qwen3-MoE as fused 3-D
parameters, ``gate_up_proj`` (experts × 2I × H, gate rows then up rows) and ``down_proj``
(experts × H × I), run by a loop over the experts the router picked. This module runs
the same loop, but each decomposed parameter is a list of per-expert
:class:`~dse.layers.FactorizedLinear` chains (each expert factored on its own at γ's
rank), so the parameters removed are real and exactly experts × (H·W − (H·r + r² + r·W)).
A parameter γ does not decompose stays the very ``nn.Parameter`` of the original module.
The router is outside this module and is never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own convention

from dse.layers import FactorizedLinear
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.decompose import TuckerFactors

__all__ = ["FactorizedExperts", "EXPERT_PARAMS"]

EXPERT_PARAMS = ("gate_up_proj", "down_proj")


class FactorizedExperts(nn.Module):
    """A drop-in for a transformers experts module (concatenated gate|up, no bias)."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        for name in EXPERT_PARAMS:
            if not isinstance(getattr(original, name, None), nn.Parameter):
                raise InvalidConfigError(
                    f"{type(original).__name__} has no {name} parameter; cannot factor its experts"
                )
        if getattr(original, "is_transposed", False) or getattr(original, "has_bias", False) \
                or not getattr(original, "is_concatenated", True) or not getattr(original, "has_gate", True):
            raise InvalidConfigError(
                f"{type(original).__name__} stores its experts in a layout other than "
                f"(experts, out, in) with concatenated gate|up and no bias; not supported"
            )
        self.num_experts = int(cast("torch.Tensor", original.gate_up_proj).shape[0])
        self.act_fn = original.act_fn
        for name in EXPERT_PARAMS:
            self.register_parameter(name, getattr(original, name))  # the same objects, shared
        self.factored = nn.ModuleDict()

    def set_factors(self, name: str, factors: TuckerFactors, *, fold: bool = False) -> None:
        """Replace dense parameter ``name`` by per-expert chains from stacked factors.

        Args:
            name: ``gate_up_proj`` or ``down_proj``.
            factors: u1 (E×H×r), core (E×r×r), u2 (E×W×r), on the weight's device and dtype.
            fold: as in :class:`~dse.layers.FactorizedLinear`.
        """
        dense = self._parameters.get(name)
        if dense is None:
            raise InvalidConfigError(f"experts parameter {name!r} is already factored")
        u1, core, u2 = (t.to(device=dense.device, dtype=dense.dtype) for t in factors)
        experts, height, width = (int(d) for d in dense.shape)
        if tuple(u1.shape[:2]) != (experts, height) or tuple(u2.shape[:2]) != (experts, width):
            raise InvalidConfigError(
                f"factors {tuple(u1.shape)}, {tuple(u2.shape)} do not fit experts weight "
                f"{tuple(dense.shape)}"
            )
        chains = nn.ModuleList(FactorizedLinear(u1[e], core[e], u2[e], fold=fold) for e in range(experts))
        chains.requires_grad_(dense.requires_grad)
        del self._parameters[name]
        self.factored[name] = chains

    def stacked_factors(self, name: str) -> TuckerFactors:
        """The factors of parameter ``name``, stacked over experts (a folded Γ is I)."""
        from dse.decompose import TuckerFactors

        chains = self.factored[name]
        u1s, cores, u2s = [], [], []
        for chain in cast("list[FactorizedLinear]", list(cast("nn.ModuleList", chains))):
            u1s.append(chain.u1.detach())
            u2s.append(chain.u2.detach())
            rank = chain.u1.shape[1]
            cores.append(chain.core.detach() if chain.core is not None
                         else torch.eye(rank, dtype=chain.u1.dtype, device=chain.u1.device))
        return TuckerFactors(torch.stack(u1s), torch.stack(cores), torch.stack(u2s))

    def _project(self, name: str, x: torch.Tensor, expert: int) -> torch.Tensor:
        if name in self.factored:
            chains = cast("nn.ModuleList", self.factored[name])
            return cast("torch.Tensor", chains[expert](x))
        dense = self._parameters[name]
        assert dense is not None
        return F.linear(x, dense[expert])

    def forward(
        self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
    ) -> torch.Tensor:
        """The transformers eager experts loop, with factored projections where γ put them."""
        final = torch.zeros_like(hidden_states)
        with torch.no_grad():
            mask = F.one_hot(top_k_index, num_classes=self.num_experts + 1).permute(2, 1, 0)
            hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
        for index in hit:
            expert = int(index[0])
            if expert == self.num_experts:
                continue
            top_k_pos, token_idx = torch.where(mask[expert])
            state = hidden_states[token_idx]
            gate, up = self._project("gate_up_proj", state, expert).chunk(2, dim=-1)
            out = self._project("down_proj", self.act_fn(gate) * up, expert)  # type: ignore[operator]
            out = out * top_k_weights[token_idx, top_k_pos, None]
            final.index_add_(0, token_idx, out.to(final.dtype))
        return final
