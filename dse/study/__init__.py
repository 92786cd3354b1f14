"""Design-space studies: Optuna search of γ under an accuracy-drop constraint.

Import cost stays low: Optuna, torch and matplotlib load when a study runs or plots.
"""

from dse.study.api import StudyHandle, list_studies, load_study, resume_study, run_study
from dse.study.definition import EvaluationSection, SearchSection, StudyDefinition, load_definition
from dse.study.encoding import ENCODINGS, SearchSpace, build_search_space, make_encoding
from dse.study.goals import GOALS, Goal
from dse.study.samplers import SAMPLERS

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
