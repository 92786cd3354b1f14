"""Fixtures of the study tests: a fresh SQLite URL, a small definition, a counting fake evaluator."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from study_fakes import SMALL_WORKLOAD, TINY_RULES, FakeFactory

from dse.study.definition import StudyDefinition


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


@pytest.fixture
def fake_factory() -> FakeFactory:
    return FakeFactory()


# ---- the storage conformance suite: every crash and concurrency test on each backend ----

POSTGRES_ENV = "DSE_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """A fresh, empty database on each backend (PostgreSQL: skipped unless ``DSE_TEST_POSTGRES_URL`` is set).

    ``.ci/run`` starts a PostgreSQL server and sets the variable; each test gets a database
    of its own on it, dropped afterwards.
    """
    import os
    import uuid

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
        return
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        pytest.skip(f"no PostgreSQL server: set {POSTGRES_ENV} (.ci/run does)")
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"dse_t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
