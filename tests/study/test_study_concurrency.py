"""Concurrency on one study, on SQLite and (when ``DSE_TEST_POSTGRES_URL`` is set) PostgreSQL.

Three ``run`` started at once on a fresh database, then three ``resume --n-trials`` at once,
then ``--workers 3`` in a space of 15 γ: exact trial counts, no γ evaluated twice, and no
process failing. The processes are real (forked, see ``forked.py``; ``--workers`` spawns its own); the
evaluator is the fake one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from forked import fork
from study_fakes import TINY_RULES, fake_factory
from test_study_crashes import check_exact

from dse.study.api import load_study, resume_study, run_study

# skip-early 0: the 15 non-empty sets of tiny-llama's 4 layers.
ALL_LAYERS = dict(TINY_RULES, **{"skip-early": 0})



def _at_once(definition: Any, env: dict[str, str], count: int, *, more: int | None = None) -> list[int]:
    """Start ``count`` processes together; each must exit 0. Returns each one's trial count."""

    def body() -> int:
        if more is not None:
            handle = resume_study(definition.study_name, storage=definition.storage, n_trials=more,
                                  evaluator_factory=fake_factory, progress=False, plots=False)
        else:
            handle = run_study(definition, evaluator_factory=fake_factory, progress=False, plots=False)
        stats = handle.run_stats
        assert stats is not None
        return stats.evaluated + stats.memoized

    children = [fork(body, env) for _ in range(count)]
    ran = []
    for child in children:
        status, result = child.wait()
        assert status == 0, result
        ran.append(int(result))
    return ran


def test_simultaneous_runs_then_simultaneous_resumes_are_exact(
        backend_url: str, make_definition: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "evaluations.log"
    env = {"STUDY_FAKE_LOG": str(log)}
    # No process dies here, so nothing may ever be reaped: a grace far beyond any lock wait or
    # scheduling delay of a loaded machine takes timing out of the counts.
    definition = make_definition(storage=backend_url, n_trials=6, rules=ALL_LAYERS, grace_period=3600)
    ran = _at_once(definition, env, 3)
    assert sum(ran) == 6  # together exactly the budget, each process counted its own
    check_exact(backend_url, 6, log)
    more = _at_once(definition, env, 3, more=3)
    rows = check_exact(backend_url, 15, log)  # each request adds its own 3, however they interleave
    assert sum(more) == 9
    assert all(r["state"] == "COMPLETE" for r in rows)  # nothing failed, nothing reaped or retried
    assert sum(bool(r["paper_seed"]) for r in rows) == 2  # seeds queued once


@pytest.mark.slow  # spawned workers import torch & co. afresh: tens of seconds on a busy machine
def test_three_workers_in_fifteen_gammas_never_measure_one_twice(
        backend_url: str, make_definition: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "evaluations.log"
    # No barrier here: a worker waiting for a γ that another holds at a barrier would never
    # reach it. The sleep gives the spawned workers time to start and take trials.
    monkeypatch.setenv("STUDY_FAKE_SLEEP", "0.3")  # the spawned workers inherit these
    monkeypatch.setenv("STUDY_FAKE_LOG", str(log))
    env: dict[str, str] = {}
    definition = make_definition(storage=backend_url, n_trials=9, workers=3, rules=ALL_LAYERS, grace_period=3600,
                                 search={"paper_seeds": 0})
    assert _at_once(definition, env, 1) == [9]  # the summary counts every worker's trials
    rows = check_exact(backend_url, 9, log)
    assert all(r["state"] == "COMPLETE" for r in rows)
    assert len(load_study("tiny", storage=backend_url).study.trials) == 9
