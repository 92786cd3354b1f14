"""What a γ saves: parameters, compression per tensor, MACs, weight bytes, operational intensity.

All counts come from the :class:`~space.spec.ModelSpec` (no weights): a decomposed
H×W weight becomes U1 (H×PR), Γ (PR×PR), U2 (W×PR), so it keeps H·PR + PR² + PR·W
parameters, and its bias (if any) is unchanged.
"""

from __future__ import annotations

from math import isqrt
from typing import Literal

from pydantic import BaseModel, ConfigDict

from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.spec import ModelSpec

__all__ = [
    "TensorReport",
    "ParameterReport",
    "CostReport",
    "factored_params",
    "compression_ratio",
    "max_compressing_rank",
    "parameter_report",
    "workload_cost",
]


def factored_params(height: int, width: int, rank: int, *, two_factor: bool = False) -> int:
    """Parameters of an H×W weight after Tucker-2 at rank PR: H·PR + PR² + PR·W.

    With ``two_factor`` (U_kΣ_k and V_kᵀ, the form of keep ratios and the data-aware
    methods) the core is absent: H·PR + PR·W.
    """
    core = 0 if two_factor else rank * rank
    return height * rank + core + rank * width


def compression_ratio(height: int, width: int, rank: int) -> float:
    """H·W / (H·PR + PR² + PR·W): above 1 means the decomposition saves parameters."""
    return height * width / factored_params(height, width, rank)


def max_compressing_rank(height: int, width: int) -> int:
    """The largest PR with H·PR + PR² + PR·W < H·W (0 when no rank compresses).

    Notes:
        PR² + (H+W)·PR − HW < 0 holds between the roots of the quadratic, i.e. for
        PR < (√((H+W)² + 4HW) − (H+W)) / 2. The root is computed with integer square
        roots and then corrected by one step either way, so the answer is exact for
        any size (a float root can be off by one near a perfect square).
    """
    if height < 1 or width < 1:
        raise InvalidConfigError(f"a weight needs positive H and W, got {height}x{width}")
    s = height + width
    rank = max((isqrt(s * s + 4 * height * width) - s) // 2, 0)
    while factored_params(height, width, rank + 1) < height * width:
        rank += 1
    while rank > 0 and factored_params(height, width, rank) >= height * width:
        rank -= 1
    return rank


class TensorReport(BaseModel):
    """One decomposed (layer, tensor): its shape, pruned rank and parameters."""

    model_config = ConfigDict(frozen=True)

    layer: int
    tensor: str
    H: int
    W: int
    rank: int
    params_before: int
    params_after: int
    compression_ratio: float
    compresses: bool
    max_compressing_rank: int


class ParameterReport(BaseModel):
    """Parameters of the whole model before and after a γ (Table IV's reduction)."""

    model_config = ConfigDict(frozen=True)

    model: str
    gamma: str
    params_before: int
    params_after: int
    param_reduction_pct: float
    decomposed_params_before: int
    decomposed_params_after: int
    per_tensor: tuple[TensorReport, ...]

    @property
    def compresses(self) -> bool:
        """True when every decomposed tensor got smaller."""
        return all(t.compresses for t in self.per_tensor)


def parameter_report(spec: ModelSpec, gamma: DecompositionConfig) -> ParameterReport:
    """Count the parameters γ removes from the whole model.

    Raises:
        InvalidConfigError: γ is not valid for ``spec`` (see ``validate_for``).
    """
    entries = []
    two_factor = gamma.is_two_factor()
    for pair in gamma.validate_for(spec):
        tensor = spec.tensor(pair.tensor)
        height, width = tensor.shape
        before = tensor.params
        if gamma.method_for(pair.tensor, layer=pair.layer) == "activation":
            after = before  # run-time decomposition of the input: the weight stays whole
        else:  # every expert's matrix of an MoE tensor
            after = tensor.factored_params(pair.rank, two_factor=two_factor)
        entries.append(
            TensorReport(
                layer=pair.layer,
                tensor=pair.tensor,
                H=height,
                W=width,
                rank=pair.rank,
                params_before=before,
                params_after=after,
                compression_ratio=before / after,
                compresses=after < before,
                max_compressing_rank=max_compressing_rank(height, width),
            )
        )
    removed_before = sum(e.params_before for e in entries)
    removed_after = sum(e.params_after for e in entries)
    params_after = spec.total_params - removed_before + removed_after
    return ParameterReport(
        model=spec.name,
        gamma=gamma.describe(spec),
        params_before=spec.total_params,
        params_after=params_after,
        param_reduction_pct=100.0 * (spec.total_params - params_after) / spec.total_params,
        decomposed_params_before=removed_before,
        decomposed_params_after=removed_after,
        per_tensor=tuple(entries),
    )


class CostReport(BaseModel):
    """Work and weight traffic of one forward pass (Table I of the paper).

    ``operational_intensity`` is MACs per weight byte, the paper's Table I ratio.
    """

    model_config = ConfigDict(frozen=True)

    model: str
    gamma: str
    batch: int
    seq_len: int
    bytes_per_param: float
    style: Literal["factorized", "reconstruct"]
    linear_macs: int
    attention_macs: int
    reconstruct_macs: int
    macs: int
    weight_bytes: float
    operational_intensity: float
    macs_before: int
    weight_bytes_before: float
    operational_intensity_before: float


def workload_cost(
    spec: ModelSpec,
    gamma: DecompositionConfig,
    *,
    batch: int = 1,
    seq_len: int = 128,
    bytes_per_param: float = 2.0,
    style: Literal["factorized", "reconstruct"] = "factorized",
) -> CostReport:
    """MACs, weight bytes and operational intensity of one forward pass under γ.

    Args:
        spec: the architecture.
        gamma: the decomposition (the original model for an empty γ).
        batch: sequences per forward pass.
        seq_len: tokens per sequence.
        bytes_per_param: 2 for FP16/BF16, 4 for FP32.
        style: ``"factorized"`` runs the three small products per token,
            r·(H+W) + r² MACs per token; ``"reconstruct"`` rebuilds W = U1·Γ·U2ᵀ once per
            pass (H·r² + H·r·W MACs) and then runs the full H·W product, the "base
            processing style" of the paper's OI example (63 → 74.26).

    Notes:
        Counted as the paper's Table I: every Linear's in×out MACs per token (the
        lm_head included) times batch·seq_len, plus the attention score and value
        products, 2·B·S²·(heads·head_dim) per layer, not halved for the causal mask.
        Weight bytes are all parameters (embeddings included) × bytes_per_param. For
        Llama-2-7B at B = 1, S = 128, FP16 this gives 850.0 G MACs and 13.48 GB; the
        paper prints 13.4 GB and a ratio of 63.4, where 850.0 / 13.48 = 63.1.
    """
    if batch < 1 or seq_len < 1:
        raise InvalidConfigError(f"batch and seq_len must be at least 1, got {batch}, {seq_len}")
    if bytes_per_param <= 0:
        raise InvalidConfigError(f"bytes_per_param must be positive, got {bytes_per_param}")
    if style not in ("factorized", "reconstruct"):
        raise InvalidConfigError(f"unknown style {style!r}; allowed: factorized, reconstruct")
    tokens = batch * seq_len
    attention = spec.n_layers * 2 * batch * seq_len * seq_len * spec.attention_dim
    linear_before = spec.linear_macs_per_token * tokens
    saved_per_token = 0
    reconstruct = 0
    for pair in gamma.validate_for(spec):
        tensor = spec.tensor(pair.tensor)
        height, width = tensor.shape
        if style == "factorized":  # an MoE tensor: only the top-k experts run per token
            saved_per_token += tensor.active * (height * width - factored_params(height, width, pair.rank))
        else:
            reconstruct += tensor.experts * (height * pair.rank * pair.rank + height * pair.rank * width)
    linear = linear_before - saved_per_token * tokens
    params = parameter_report(spec, gamma).params_after
    macs = linear + attention + reconstruct
    macs_before = linear_before + attention
    weight_bytes = params * bytes_per_param
    bytes_before = spec.total_params * bytes_per_param
    return CostReport(
        model=spec.name,
        gamma=gamma.describe(spec),
        batch=batch,
        seq_len=seq_len,
        bytes_per_param=bytes_per_param,
        style=style,
        linear_macs=linear,
        attention_macs=attention,
        reconstruct_macs=reconstruct,
        macs=macs,
        weight_bytes=weight_bytes,
        operational_intensity=macs / weight_bytes,
        macs_before=macs_before,
        weight_bytes_before=bytes_before,
        operational_intensity_before=macs_before / bytes_before,
    )
