"""Fault injection: a run killed (SIGKILL) at each step of a trial's life, then resumed.

Each kill is placed by patching a named point in a child process (forked, see
``forked.py``), not by timing: the patched function kills its own process the n-th time
it is reached. After the resume the study
must hold exactly ``n_trials`` measured trials, none RUNNING, and no γ measured twice
(the fake evaluator logs every evaluation of every process). Runs on SQLite and, when
``DSE_TEST_POSTGRES_URL`` is set, on PostgreSQL (see ``backend_url`` in conftest).
"""

from __future__ import annotations

import importlib
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from forked import fork, kill_at
from study_fakes import TINY_RULES, FakeFactory, fake_factory

from dse.study.api import load_study, resume_study, run_study


def _complete(*args: Any, **kwargs: Any) -> bool:
    state = kwargs.get("state")
    return state is None or state.name == "COMPLETE"


# Each point: the attribute patched, whether the kill comes before or after the original
# call, on which call (counted in the killed process) it fires, and which calls count.
POINTS: dict[str, tuple[str, str, int, Any]] = {
    "before_ask": ("optuna.study.Study.ask", "before", 2, None),
    "after_ask": ("optuna.study.Study.ask", "after", 2, None),
    "after_memo_write": ("dse.study.memo.EngineTables.memo_put", "after", 2, None),
    "after_tell": ("optuna.study.Study.tell", "after", 2, _complete),
    "during_baseline": ("study_fakes.FakeEvaluator.baseline", "before", 1, None),
}
# Inside the reaper, at each of its steps (the first reconcile of a resume that finds a
# trial left RUNNING by a previous kill): the first kill, then the point in the reaper.
REAPER_POINTS: dict[str, tuple[str, tuple[str, str, int, Any]]] = {
    # The stale trial is FAIL; its γ not yet queued again, its slot not settled.
    "reaper_after_fail": ("after_memo_write", ("dse.study.reaper.requeue_pending", "before", 1, None)),
    # This reaper holds the trial's dse_requeues row but has not queued it (taken over after the grace).
    "reaper_before_queue": ("after_memo_write", ("optuna.study.Study.add_trial", "before", 1, None)),
    # Queued again, the slot not yet settled.
    "reaper_after_queue": ("after_memo_write", ("optuna.study.Study.add_trial", "after", 1, None)),
    # Settling the dead trial's slot.
    "reaper_settling": ("after_memo_write", ("dse.study.claims.Budget.end", "before", 1, None)),
    # A trial killed before its first heartbeat, failed by the reaper, not yet queued again.
    "reaper_orphan_after_fail": ("after_ask", ("dse.study.reaper.requeue_pending", "before", 1, None)),
}


def _killed_run(definition: Any, point: tuple[str, str, int, Any], *, resume: bool = False) -> None:
    """Run (or resume) the study in a forked process patched to SIGKILL itself at ``point``."""
    path, when, nth, only = point

    def body() -> None:
        module_name, cls_name, attr = path.rsplit(".", 2)
        kill_at(getattr(importlib.import_module(module_name), cls_name), attr, when=when, nth=nth, only=only)
        if resume:
            resume_study(definition.study_name, storage=definition.storage, evaluator_factory=fake_factory,
                         progress=False, plots=False)
        else:
            run_study(definition, evaluator_factory=fake_factory, progress=False, plots=False)

    status, result = fork(body).wait()
    assert status == -signal.SIGKILL, f"the kill point was not reached (exit {status}): {result}"


def check_exact(storage: str, n_trials: int, log: Path) -> list[dict[str, Any]]:
    """Exactly ``n_trials`` measured, none RUNNING or WAITING for a slot, no γ evaluated twice."""
    rows = load_study("tiny", storage=storage).trials()
    states = Counter(r["state"] for r in rows)
    measured = [r for r in rows if r["state"] == "COMPLETE" and not r["rejected"]]
    assert len(measured) == n_trials, states
    assert states["RUNNING"] == 0, states
    evaluated = log.read_text().split() if log.exists() else []
    twice = {h: n for h, n in Counter(evaluated).items() if n > 1}
    assert not twice, f"γ evaluated more than once: {twice}"
    # Every measured trial's γ was evaluated once, or answered from the memo.
    assert {r["gamma_hash"] for r in measured if not r["memoized"]} <= set(evaluated)
    return rows


@pytest.mark.parametrize("point", list(POINTS) + list(REAPER_POINTS))
def test_a_kill_at_any_step_leaves_exactly_n_trials_after_resume(
        point: str, backend_url: str, make_definition: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "evaluations.log"
    monkeypatch.setenv("STUDY_FAKE_LOG", str(log))
    definition = make_definition(storage=backend_url, n_trials=4, rules=dict(TINY_RULES, **{"skip-early": 0}))
    if point in REAPER_POINTS:
        # A first kill leaves a RUNNING trial; the resume that reaps it is killed inside the reaper.
        first, inside = REAPER_POINTS[point]
        _killed_run(definition, POINTS[first])
        _killed_run(definition, inside, resume=True)
    else:
        _killed_run(definition, POINTS[point])
    handle = resume_study("tiny", storage=backend_url, evaluator_factory=FakeFactory(), progress=False, plots=False)
    rows = check_exact(backend_url, 4, log)
    if point == "after_memo_write" or point in REAPER_POINTS:
        # The killed trial's γ was queued again exactly once, and answered from the memo
        # when it had been measured, not measured again.
        retried = [r for r in rows if r["retry_of"] is not None]
        lost = [r["number"] for r in rows if r["state"] == "FAIL"]
        assert sorted(r["retry_of"] for r in retried) == sorted(lost), (retried, lost)
        assert all(r["state"] == "COMPLETE" for r in retried)
        if REAPER_POINTS.get(point, ("after_memo_write",))[0] == "after_memo_write":
            assert all(r["memoized"] for r in retried)
    if point != "during_baseline":
        assert handle.run_stats is not None
