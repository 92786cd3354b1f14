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
    # Ratios carry their intervals, the ABBA blocks used and whether the machine was quiet.
    for key in ("latency_ratio", "edp_ratio"):
        low, high = out[f"{key}_ci"]
        assert low <= out[key] <= high
    assert out["repeats"] >= 1 and isinstance(out["noisy"], bool) and out["threads"] >= 1
    assert out["hardware"]["threads"] == out["threads"] and out["hardware"]["torch"]
    if out["energy_estimated"]:
        assert "estimate" in out["standins"]["energy_ratio"]
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


def test_python_api_decides_feasibility_under_tau(tmp_path: Path, data_dir: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import dse

    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    out = dse.evaluate("tiny-llama", layers=[1], tasks=["dse_arc_easy"], limit=4, data_dir=str(data_dir),
                       tau=4.0, feasibility="confident", progress=False)
    assert out["feasibility"] == "confident" and out["tau"] == 4.0
    _, high = out["decision_ci_pp"]
    assert out["feasible"] == (high < 4.0) and out["decision_docs"] == 4
    assert "τ=4" in out["decided_by"]
    assert out["latency_ratio"] is None and out["repeats"] is None  # latency not asked for


def test_bad_feasibility_setting_is_one_line(tmp_path: Path) -> None:
    result = _run("evaluate", "tiny-llama", "--layers", "1", "--limit", "5", "--max-limit", "3",
                  "--feasibility", "adaptive", "--cache-dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "max_limit (3) must be at least limit (5)" in lines[0], result.stderr
