"""Worker processes: they die with their parent, and Ctrl-C stops them with one line each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dse.study.api import load_study

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

_PARENT = """
import sys
sys.path.insert(0, {here!r})
import study_fakes
from dse.study import run_study
from dse.study.definition import StudyDefinition
try:
    run_study(StudyDefinition.model_validate_json({definition!r}), evaluator_factory=study_fakes.fake_factory,
              progress=False, plots=False)
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    sys.exit(130)
"""


def _start(definition: Any) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), STUDY_FAKE_SLEEP="120")
    script = _PARENT.format(here=str(HERE), definition=definition.model_dump_json())
    return subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _running_pids(storage: str, count: int, proc: subprocess.Popen[str]) -> set[int]:
    """Wait (a hang guard, not a timing assertion) until ``count`` processes each run a trial."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "exited"
        try:
            trials = load_study("tiny", storage=storage).study.trials
        except Exception:  # noqa: BLE001 - not created yet
            trials = []
        pids = {int(t.user_attrs["worker"].split(":")[1]) for t in trials
                if t.state.name == "RUNNING" and "worker" in t.user_attrs}
        if len(pids) >= count:
            return pids
        time.sleep(0.3)
    raise AssertionError("the workers never all ran a trial")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its dead parent's successor) counts as gone.
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


@pytest.mark.slow  # spawned workers import torch & co.: tens of seconds on a busy machine
def test_workers_die_with_their_parent_and_give_their_trials_back(make_definition: Any) -> None:
    definition = make_definition(n_trials=6, workers=3, search={"paper_seeds": 0})
    proc = _start(definition)
    try:
        # The trial attribute "worker" is set before evaluation: running trials name their process.
        _running_pids(definition.storage, 3, proc)
        children = {int(t.user_attrs["worker"].split(":")[1]) for t in load_study("tiny", storage=definition.storage)
                    .study.trials if "worker" in t.user_attrs} - {proc.pid}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in children), "a worker outlived its parent"
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = load_study("tiny", storage=definition.storage).trials()
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert len(failed) == 2 and all("parent process died" in r["fail_reason"] for r in failed)
    assert sum(r["state"] == "WAITING" for r in rows) == 2  # their γ queued again


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_with_one_line_and_no_traceback(make_definition: Any, sigint_default: None) -> None:
    definition = make_definition(n_trials=6, workers=3, search={"paper_seeds": 0})
    proc = _start(definition)
    try:
        _running_pids(definition.storage, 3, proc)
        os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole process group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert sorted(lines) == sorted(["interrupted"] + [
        f"worker {i}: interrupted; its running trial was marked FAIL and its γ queued again" for i in (1, 2)])
    rows = load_study("tiny", storage=definition.storage).trials()
    assert sum(r["state"] == "FAIL" for r in rows) == 3 and not any(r["state"] == "RUNNING" for r in rows)
