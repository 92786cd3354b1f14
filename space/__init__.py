"""The formal design space of low-rank decomposition (Moar et al., 2024, Section III-A).

Pure Python: importing it never loads torch, transformers or lm-eval.
"""

from space.config import DecompositionConfig, ResolvedPair
from space.errors import DataError, DseError, InvalidConfigError, StorageError, UnknownNameError
from space.presets import PRESETS, load_spec
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
]
