"""Fault injection: a run killed (SIGKILL) at each step of a trial's life, then resumed.

Each kill is placed by patching a named point in a subprocess, not by timing: the patched
function kills its own process the n-th time it is reached. After the resume the study
must hold exactly ``n_trials`` measured trials, none RUNNING, and no γ measured twice
(the fake evaluator logs every evaluation of every process). Runs on SQLite and, when
``DSE_TEST_POSTGRES_URL`` is set, on PostgreSQL (see ``backend_url`` in conftest).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import TINY_RULES, FakeFactory

from dse.study.api import load_study, resume_study

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Each point: the attribute patched, whether the kill comes before or after the original
# call, and on which call (counted in the killed process) it fires.
POINTS: dict[str, tuple[str, str, int]] = {
    "before_ask": ("optuna.study.Study.ask", "before", 2),
    "after_ask": ("optuna.study.Study.ask", "after", 2),
    "after_memo_write": ("dse.study.memo.EngineTables.memo_put", "after", 2),
    "after_tell": ("optuna.study.Study.tell", "after", 2),
    "during_baseline": ("study_fakes.FakeEvaluator.baseline", "before", 1),
    # Inside the reaper: the stale trial is FAIL but its γ not yet queued again nor its slot settled.
    "inside_reaper": ("optuna.storages.RetryHeartbeatStaleTrialCallback.__call__", "before", 1),
}

_CHILD = """
import importlib, os, signal, sys
sys.path.insert(0, {here!r})
import study_fakes
from dse.study import run_study, resume_study
from dse.study.definition import StudyDefinition

path, when, nth = {point!r}
module_name, cls_name, attr = path.rsplit(".", 2)
cls = getattr(importlib.import_module(module_name), cls_name)
original = getattr(cls, attr)
calls = [0]

def patched(*args, **kwargs):
    if path.endswith("tell") and kwargs.get("state") is not None and kwargs["state"].name != "COMPLETE":
        return original(*args, **kwargs)
    calls[0] += 1
    if when == "before" and calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    result = original(*args, **kwargs)
    if when == "after" and calls[0] == nth:
        os.kill(os.getpid(), signal.SIGKILL)
    return result

setattr(cls, attr, patched)
definition = StudyDefinition.model_validate_json({definition!r})
if {resume!r}:
    resume_study(definition.study_name, storage=definition.storage, evaluator_factory=study_fakes.fake_factory,
                 progress=False, plots=False)
else:
    run_study(definition, evaluator_factory=study_fakes.fake_factory, progress=False, plots=False)
"""


def _killed_run(definition: Any, point: tuple[str, str, int], env: dict[str, str], *, resume: bool = False) -> None:
    script = _CHILD.format(here=str(HERE), point=point, definition=definition.model_dump_json(), resume=resume)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -9, f"the kill point was not reached (exit {done.returncode}): {done.stderr[-2000:]}"


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


@pytest.mark.parametrize("point", list(POINTS))
def test_a_kill_at_any_step_leaves_exactly_n_trials_after_resume(
        point: str, backend_url: str, make_definition: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "evaluations.log"
    monkeypatch.setenv("STUDY_FAKE_LOG", str(log))
    definition = make_definition(storage=backend_url, n_trials=4, rules=dict(TINY_RULES, **{"skip-early": 0}))
    env = dict(os.environ, PYTHONPATH=str(ROOT), STUDY_FAKE_LOG=str(log))
    if point == "inside_reaper":
        # A first kill leaves a RUNNING trial; the resume that reaps it is killed inside the reaper.
        _killed_run(definition, POINTS["after_memo_write"], env)
        _killed_run(definition, POINTS[point], env, resume=True)
    else:
        _killed_run(definition, POINTS[point], env)
    handle = resume_study("tiny", storage=backend_url, evaluator_factory=FakeFactory(), progress=False, plots=False)
    rows = check_exact(backend_url, 4, log)
    if point == "after_memo_write":
        # The killed trial's γ was queued again and answered from the memo, not measured again.
        retried = [r for r in rows if r["retry_of"] is not None and r["state"] == "COMPLETE"]
        assert retried and all(r["memoized"] for r in retried)
    if point != "during_baseline":
        assert handle.run_stats is not None
