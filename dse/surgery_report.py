"""What applying a γ did (:class:`SurgeryReport`), and the report of the γ a model holds now.

Saved model directories, study trials and ``dse decompose --json`` carry this record, so
it lives apart from the surgery that makes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from space.config import DecompositionConfig

if TYPE_CHECKING:
    from dse.models import LoadedModel

__all__ = ["TensorResult", "SurgeryReport", "gamma_from_canonical", "current"]


class TensorResult(BaseModel):
    """One decomposed (layer, tensor): its pruned rank and how well the factors fit W."""

    model_config = ConfigDict(frozen=True)

    layer: int
    tensor: str
    rank: int
    rel_error: float  # ||W - U1·Γ·U2ᵀ||_F / ||W||_F, computed in float64 (0 for activation)
    cached: bool  # factors came from the factor cache (no decomposition)
    method: str = "svd"
    jitter: float = 0.0  # svd-llm: diagonal added to XᵀX before the Cholesky (-1: svd fallback)


class SurgeryReport(BaseModel):
    """What applying a γ did: the savings (counted on the model) and the fit of each tensor."""

    model_config = ConfigDict(frozen=True)

    model: str
    fingerprint: str
    gamma: dict[str, Any]  # canonical form (DecompositionConfig.canonical)
    gamma_hash: str
    description: str
    method: str
    fold: bool
    params_before: int
    params_after: int
    param_reduction_pct: float
    per_tensor: list[TensorResult]
    max_rel_error: float
    decompose_seconds: float
    cache_hits: int
    cache_misses: int

    def config(self) -> DecompositionConfig:
        """The γ this report was made for."""
        return gamma_from_canonical(self.gamma)


def gamma_from_canonical(form: Mapping[str, Any]) -> DecompositionConfig:
    """Rebuild γ from :meth:`DecompositionConfig.canonical` output (e.g. read from JSON)."""
    return DecompositionConfig.from_canonical(dict(form))



def current(loaded: LoadedModel) -> SurgeryReport | None:
    """The report of the γ installed on this model, or None for the original model."""
    return loaded.applied if isinstance(loaded.applied, SurgeryReport) else None
