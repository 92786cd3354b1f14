"""Several processes on one SQLite study: a worker killed with SIGKILL, and parallel workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import study_fakes
from study_fakes import FakeFactory

from dse.study.api import load_study, resume_study, run_study

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

_CHILD = """
import sys
sys.path.insert(0, {here!r})
from study_fakes import fake_factory
from dse.study import run_study
from dse.study.definition import StudyDefinition
run_study(StudyDefinition.model_validate_json({definition!r}), evaluator_factory=fake_factory,
          progress=False, plots=False)
"""


def _running_trial_in_evaluation(storage: str) -> bool:
    try:
        handle = load_study("tiny", storage=storage)
    except Exception:  # noqa: BLE001 - the child may not have created the study yet
        return False
    return any(r["state"] == "RUNNING" and r.get("gamma_label") for r in handle.trials())


def test_sigkilled_worker_leaves_a_running_trial_that_resume_fails_and_replaces(make_definition) -> None:  # type: ignore[no-untyped-def]
    definition = make_definition(n_trials=3)
    env = dict(os.environ, STUDY_FAKE_SLEEP="60", PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(here=str(HERE), definition=definition.model_dump_json())],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not _running_trial_in_evaluation(definition.storage):
            assert child.poll() is None, child.stderr.read().decode() if child.stderr else "child exited"
            assert time.monotonic() < deadline, "the child never started a trial"
            time.sleep(0.2)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    # The killed trial (the first paper seed) is RUNNING; the second seed still waits.
    assert [r["state"] for r in load_study("tiny", storage=definition.storage).trials()] == ["RUNNING", "WAITING"]

    factory = FakeFactory()
    handle = resume_study("tiny", storage=definition.storage, evaluator_factory=factory, progress=False, plots=False)
    rows = handle.trials()
    assert [r["state"] for r in rows] == ["FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    assert "stale" in rows[0]["fail_reason"]
    assert handle.run_stats.reaped == 1
    # The killed trial's γ was not lost: it was queued again and measured.
    retried = [r for r in rows if r["retry_of"] == 0]
    assert len(retried) == 1 and retried[0]["state"] == "COMPLETE"
    assert retried[0]["gamma_label"] == rows[0]["gamma_label"] and retried[0]["paper_seed"]


def test_two_workers_produce_exactly_the_requested_trials(make_definition, monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    monkeypatch.setenv("STUDY_FAKE_SLEEP", "0.2")
    monkeypatch.setenv("STUDY_FAKE_BARRIER", f"{barrier}:2")  # both workers hold a trial at once
    definition = make_definition(n_trials=10, workers=2, search={"paper_seeds": 0, "sampler": "random"},
                                 rules={"skip-early": 0, "min-distance": 1, "rank-one": True})
    handle = run_study(definition, evaluator_factory=study_fakes.fake_factory, progress=False, plots=False)
    rows = handle.trials()
    assert [r["number"] for r in rows] == list(range(10))
    assert all(r["state"] == "COMPLETE" and not r["rejected"] for r in rows)
    workers = {t.user_attrs["worker"] for t in handle.study.trials}
    assert len(workers) == 2, "both processes ran trials"
