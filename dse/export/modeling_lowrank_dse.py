"""A Hugging Face causal LM whose chosen linear layers are low-rank Tucker factors.

Written by lowrank-dse next to ``config.json`` of an exported model and loaded by
``AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)`` (``config.json``
maps ``AutoConfig`` and ``AutoModelForCausalLM`` to the classes here). The class is the
model family's own class (``BASE_CLASS``) with every linear layer listed in
``config.lowrank_dse["factorized"]`` replaced, on construction, by
:class:`FactorizedLinear`; ``from_pretrained`` then fills the factors ``u1``, ``core``
and ``u2`` from the checkpoint. The forward pass is the one lowrank-dse measured: the
weight W = U1·Γ·U2ᵀ is never rebuilt. Only ``torch`` and ``transformers`` are needed.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn
from torch.nn import functional as F  # noqa: N812 - torch's own convention

BASE_CLASS = "LlamaForCausalLM"  # replaced by the exporter with the family's class
BASE_CONFIG_CLASS = "LlamaConfig"  # likewise
MODEL_TYPE = "lowrank_dse"

_Base: Any = getattr(transformers, BASE_CLASS)
_BaseConfig: Any = getattr(transformers, BASE_CONFIG_CLASS)

__all__ = ["FactorizedLinear", "LowRankDseConfig", "LowRankDseForCausalLM"]


class LowRankDseConfig(_BaseConfig):
    """The family's config under its own model type.

    A model type transformers does not know makes loading without
    ``trust_remote_code=True`` fail loudly instead of building the dense family model
    with random weights in place of the factors.
    """

    model_type = MODEL_TYPE


class FactorizedLinear(nn.Module):
    """``nn.Linear(in_features, out_features)`` held as U1 (H×r), Γ (r×r) and U2 (W×r)."""

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = False,
                 fold: bool = False, dtype: torch.dtype | None = None, device: Any = None) -> None:
        super().__init__()
        kw: dict[str, Any] = {"dtype": dtype, "device": device}
        self.u1 = nn.Parameter(torch.zeros(out_features, rank, **kw))
        self.u2 = nn.Parameter(torch.zeros(in_features, rank, **kw))
        if fold:
            self.register_parameter("core", None)
        else:
            self.core = nn.Parameter(torch.zeros(rank, rank, **kw))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, **kw))
        else:
            self.register_parameter("bias", None)
        self.in_features, self.out_features, self.rank = in_features, out_features, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.numel() // max(self.in_features, 1)
        if self.core is None:
            return F.linear(F.linear(x, self.u2.T), self.u1, self.bias)
        if tokens <= min(self.in_features, self.out_features):
            return F.linear(F.linear(F.linear(x, self.u2.T), self.core), self.u1, self.bias)
        if self.in_features <= self.out_features:
            return F.linear(F.linear(x, (self.u2 @ self.core.T).T), self.u1, self.bias)
        return F.linear(F.linear(x, self.u2.T), self.u1 @ self.core, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
                f"bias={self.bias is not None}, fold={self.core is None}")


class LowRankDseForCausalLM(_Base):
    """The family's causal LM with the configured linear layers factorized."""

    config_class = LowRankDseConfig

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        info = getattr(config, "lowrank_dse", None) or {}
        for path, layer in info.get("factorized", {}).items():
            old = self.get_submodule(path)
            weight = old.weight
            new = FactorizedLinear(
                int(layer["in_features"]), int(layer["out_features"]), int(layer["rank"]),
                bias=bool(layer.get("bias", False)), fold=bool(layer.get("fold", False)),
                dtype=weight.dtype, device=weight.device,
            )
            parent, _, child = path.rpartition(".")
            setattr(self.get_submodule(parent) if parent else self, child, new)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        """Load, then copy the factors into fresh allocations.

        Tensors read from a safetensors file can start at any byte offset; the small
        rank-r products take other SIMD paths on such memory and round differently
        (~1e-5 on logits). Fresh allocations are aligned as lowrank-dse's are, so the
        logits match the measured model's exactly.
        """
        model = super().from_pretrained(*args, **kwargs)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, FactorizedLinear):
                    for param in module.parameters(recurse=False):
                        param.data = param.data.clone()
        return model
