"""Fixtures of the study tests: a fresh SQLite URL, a small definition, a counting fake evaluator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from study_fakes import FakeEvaluator

from dse.study.definition import StudyDefinition

# Rules that leave tiny-llama (4 layers) seven layer sets to search: layers 1..3, adjacent allowed.
TINY_RULES = {"rank-one": True, "whole-layers": True, "skip-early": 1, "min-distance": 1}
SMALL_WORKLOAD = {"prefill_tokens": 8, "decode_tokens": 2, "warmup": 0, "repeats": 1}


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


@pytest.fixture
def make_definition(storage_url: str) -> Callable[..., StudyDefinition]:
    """A tiny-llama study on two tasks; keyword arguments override any field."""

    def make(**overrides: Any) -> StudyDefinition:
        data: dict[str, Any] = {
            "name": "tiny", "model": "tiny-llama", "storage": storage_url, "n_trials": 6, "tau": 4.0,
            "rules": dict(TINY_RULES), "workload": dict(SMALL_WORKLOAD), "heartbeat_interval": 1,
            "grace_period": 2,
            "evaluation": {"tasks": ["dse_arc_easy", "dse_piqa"], "limit": 5, "batch_size": 8},
            "search": {"sampler": "random", "seed": 1, "paper_seeds": 2},
        }
        for key, value in overrides.items():
            if key in ("evaluation", "search") and isinstance(value, dict):
                data[key] = data[key] | value
            else:
                data[key] = value
        return StudyDefinition.model_validate(data)

    return make


class FakeFactory:
    """An evaluator factory that keeps the evaluators it made (to count their calls)."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.made: list[FakeEvaluator] = []

    def __call__(self, definition: StudyDefinition, *, progress: bool = False) -> FakeEvaluator:
        evaluator = FakeEvaluator(definition, progress=progress, **self.kwargs)
        self.made.append(evaluator)
        return evaluator

    @property
    def evaluations(self) -> int:
        return sum(e.evaluations for e in self.made)


@pytest.fixture
def fake_factory() -> FakeFactory:
    return FakeFactory()
