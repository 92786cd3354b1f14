"""Design-space studies: Optuna search of γ under an accuracy-drop constraint.

Import cost stays low: the names below load on first use (as in ``dse``), so importing
one module of the package (``dse.study.definition``) imports none of the others, and
Optuna, torch and matplotlib load only when a study runs or plots.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dse.study.api import StudyHandle, list_studies, load_study, resume_study, run_study
    from dse.study.definition import EvaluationSection, SearchSection, StudyDefinition, load_definition
    from dse.study.encoding import ENCODINGS, make_encoding
    from dse.study.goals import GOALS, Goal
    from dse.study.samplers import SAMPLERS
    from dse.study.search_space import SearchSpace, build_search_space

__all__ = [
    "StudyHandle",
    "run_study",
    "resume_study",
    "load_study",
    "list_studies",
    "StudyDefinition",
    "EvaluationSection",
    "SearchSection",
    "load_definition",
    "ENCODINGS",
    "SearchSpace",
    "build_search_space",
    "make_encoding",
    "GOALS",
    "Goal",
    "SAMPLERS",
]

_LAZY = {
    "StudyHandle": "dse.study.api",
    "run_study": "dse.study.api",
    "resume_study": "dse.study.api",
    "load_study": "dse.study.api",
    "list_studies": "dse.study.api",
    "StudyDefinition": "dse.study.definition",
    "EvaluationSection": "dse.study.definition",
    "SearchSection": "dse.study.definition",
    "load_definition": "dse.study.definition",
    "ENCODINGS": "dse.study.encoding",
    "SearchSpace": "dse.study.search_space",
    "build_search_space": "dse.study.search_space",
    "make_encoding": "dse.study.encoding",
    "GOALS": "dse.study.goals",
    "Goal": "dse.study.goals",
    "SAMPLERS": "dse.study.samplers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dse.study' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
