"""The main job on the real model: studies/smollm2-quick.toml with fewer documents and 3 trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from dse.study.api import run_study
from dse.study.definition import load_definition

QUICK = Path(__file__).resolve().parents[2] / "studies" / "smollm2-quick.toml"


@pytest.mark.slow
def test_quick_study_runs_end_to_end_on_smollm2(tmp_path: Path, data_dir: Path) -> None:
    definition = load_definition(QUICK).with_overrides(
        storage=f"sqlite:///{tmp_path / 'dse.db'}", n_trials=3, limit=8, chunk_size=4, data_dir=str(data_dir),
        workload={"prefill_tokens": 32, "decode_tokens": 4, "warmup": 0, "repeats": 1}, screen=True,
    )
    handle = run_study(definition, progress=False, plots=tmp_path / "plots")
    rows = handle.trials()
    assert [r["state"] for r in rows] == ["COMPLETE"] * 3
    assert handle.baseline["params"] == 134_515_008
    assert 0.3 < handle.baseline["accuracy"] <= 1.0
    # The two paper seeds (Table IV's {3,30} and {3,18,32} on 30 layers) came first.
    assert [r["gamma"]["layers"] for r in rows[:2]] == [[2, 27], [2, 16, 29]]
    for row in rows:
        assert row["per_task"].keys() == {"dse_arc_easy", "dse_piqa", "dse_hellaswag"}
        assert row["feasible"] == (row["accuracy_drop_pp"] < definition.tau)
        assert row["param_reduction_pct"] > 0
        assert row["kl_divergence"] > 0 and not row["screened"]  # the KL screen records; 3 trials skip nothing
        if not row["early_stopped"]:
            assert row["edp_ratio"] == pytest.approx(row["latency_ratio"] * row["energy_ratio"])
    best = handle.best()
    assert best is None or best["accuracy_drop_pp"] < definition.tau
    assert all(p.exists() for p in handle.plot_paths)
