"""The real SmolLM2-135M layer sweep on ARC-Easy: early layers hurt most, and Ctrl-C then a rerun resumes.

Slow (loads the real model twice, 30 trials): marked ``slow``.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
LIMIT = "25"  # as docs/results.md's layer sweep


def _complete(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as con:
            return int(con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0])
    except sqlite3.OperationalError:  # tables not created yet
        return 0


@pytest.mark.slow
def test_layer_sweep_resumes_after_ctrl_c_and_ranks_layers_0_and_1_most_harmful(tmp_path: Path,
                                                                             sigint_default: None) -> None:
    db = tmp_path / "char.db"
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    command = [sys.executable, "-m", "dse.cli", "characterize", "smollm2-135m", "--sweep", "layers",
               "--tasks", "dse_arc_easy", "--limit", LIMIT, "--no-efficiency", "--quiet",
               "--storage", f"sqlite:///{db}"]
    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 1200
    while _complete(db) < 2 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 130, err[-2000:]
    interrupted_at = _complete(db)
    assert 2 <= interrupted_at < 30

    second = subprocess.run([*command, "--json"], check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=3600)
    assert second.returncode == 0, second.stderr[-2000:]
    result = json.loads(second.stdout)
    points = result["points"]
    assert [p["layers"] for p in points] == [[i] for i in range(30)]
    assert all(p["measured"] for p in points)
    with sqlite3.connect(db) as con:
        labels = [json.loads(v) for (v,) in con.execute(
            "SELECT a.value_json FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
            "WHERE a.key = 'gamma_label' AND t.state = 'COMPLETE'")]
    assert sorted(labels) == sorted(set(labels)) and len(labels) == 30  # each layer measured exactly once
    assert sum(p["memoized"] for p in points) == 0

    baseline = result["baseline"]["per_task"]["dse_arc_easy"]
    assert 0.4 < baseline < 0.7  # SmolLM2-135M-Instruct on the first 25 ARC-Easy test questions
    worst = [p["layers"][0] for p in sorted(points, key=lambda p: -p["accuracy_drop_pp"])[:5]]
    assert 0 in worst and 1 in worst, worst
