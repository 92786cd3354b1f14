"""lowrank-dse: the engine (decomposition, model surgery, studies, storage, CLI).

Heavy parts import lazily (as optuna does), so ``import dse`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from space.errors import DataError, DseError, InvalidConfigError, StorageError, UnknownNameError

__all__ = [
    "DseError",
    "InvalidConfigError",
    "UnknownNameError",
    "DataError",
    "StorageError",
    "load_model",
    "load_decomposed",
    "save_decomposed",
    "run_study",
    "load_study",
    "evaluate",
    "decompose_model",
    "generate",
    "characterize",
    "FactorCache",
    "FactorizedLinear",
    "TuckerFactors",
]

_LAZY = {
    "load_model": "dse.models:load_model",
    "load_decomposed": "dse.saving:load_decomposed",
    "save_decomposed": "dse.saving:save_decomposed",
    "run_study": "dse.study.api:run_study",
    "load_study": "dse.study.api:load_study",
    "evaluate": "dse.evaluate_api:evaluate",
    "decompose_model": "dse.decompose_api:decompose_model",
    "generate": "dse.decompose_api:generate",
    "characterize": "dse.characterize_api:characterize",
    "FactorCache": "dse.cache:FactorCache",
    "FactorizedLinear": "dse.layers:FactorizedLinear",
    "TuckerFactors": "dse.decompose:TuckerFactors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module_name, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(module_name), attr)
    raise AttributeError(f"module 'dse' has no attribute {name!r}")
