"""The formal design space of low-rank decomposition (Moar et al., 2024, Section III-A).

Pure Python: importing it never loads torch, transformers or lm-eval.
"""

from space.config import DecompositionConfig, ResolvedPair
from space.counting import (
    SpaceSize,
    enumerate_space,
    log2_size,
    size_report,
    space_size,
    theorem1_size,
)
from space.errors import DataError, DseError, InvalidConfigError, StorageError, UnknownNameError
from space.metrics import (
    CostReport,
    ParameterReport,
    TensorReport,
    max_compressing_rank,
    parameter_report,
    workload_cost,
)
from space.presets import PRESETS, load_spec
from space.rules import (
    RULES,
    PrunedSpace,
    RuleSet,
    Verdict,
    allowed_layers,
    allowed_ranks,
    allowed_tensor_sets,
    min_layer_gap,
    pruned_candidates,
    pruned_report,
    pruned_size,
    require_candidates,
)
from space.spec import ModelSpec, TensorSpec

__all__ = [
    "DecompositionConfig",
    "ResolvedPair",
    "ModelSpec",
    "TensorSpec",
    "PRESETS",
    "load_spec",
    "DseError",
    "InvalidConfigError",
    "UnknownNameError",
    "DataError",
    "StorageError",
    # counting
    "SpaceSize",
    "theorem1_size",
    "space_size",
    "size_report",
    "log2_size",
    "enumerate_space",
    # metrics
    "ParameterReport",
    "TensorReport",
    "CostReport",
    "parameter_report",
    "max_compressing_rank",
    "workload_cost",
    # rules
    "RULES",
    "RuleSet",
    "Verdict",
    "PrunedSpace",
    "allowed_layers",
    "allowed_ranks",
    "allowed_tensor_sets",
    "min_layer_gap",
    "pruned_candidates",
    "pruned_size",
    "pruned_report",
    "require_candidates",
]
