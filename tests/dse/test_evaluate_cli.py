"""``dse evaluate``: the JSON contract and one-line errors."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

DSE = [sys.executable, "-m", "dse.cli"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **(env or {})}
    return subprocess.run([*DSE, *args], capture_output=True, text=True, env=full_env, timeout=600, check=False)


def test_json_reports_baseline_compressed_and_drop(tmp_path: Path, data_dir: Path) -> None:
    result = _run(
        "evaluate", "tiny-llama", "--layers", "1,3", "--tasks", "dse_arc_easy,dse_piqa",
        "--limit", "5", "--latency", "--energy", "--prefill", "8", "--decode", "2",
        "--repeats", "1", "--data-dir", str(data_dir), "--cache-dir", str(tmp_path), "--json",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    for key in ("accuracy", "baseline_accuracy", "accuracy_drop_pp", "per_task", "latency_s",
                "latency_ratio", "energy_j", "energy_estimated", "edp_ratio", "params",
                "param_reduction_pct"):
        assert key in out
    assert set(out["per_task"]) == {"dse_arc_easy", "dse_piqa"}
    assert out["accuracy_drop_pp"] == pytest.approx((out["baseline_accuracy"] - out["accuracy"]) * 100)
    assert out["edp_ratio"] == pytest.approx(out["latency_ratio"] * out["energy_ratio"])
    assert out["params"] < out["params_before"]
    # The baseline is stored for the next run of the same model on the same documents.
    with sqlite3.connect(tmp_path / "baselines.db") as db:
        rows = db.execute("SELECT fingerprint, record FROM dse_baselines").fetchall()
    assert len(rows) == 1 and json.loads(rows[0][1])["accuracy"] == pytest.approx(out["baseline_accuracy"])


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--tasks", "dse_nope"], "unknown"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--data-dir", "/no/such/dir"], "does not exist"),
        (["--layers", "7"], "out of range"),
        (["--layers", "1,x"], "malformed layers list"),
        (["--rank", "0"], "--rank must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], fragment: str, tmp_path: Path) -> None:
    result = _run("evaluate", "tiny-llama", "--layers", "1", *args, "--cache-dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr
