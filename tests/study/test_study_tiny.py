"""A real study: tiny-llama measured with lm-eval on real benchmark documents, end to end.

One study (4 trials, 2 tasks × 5 documents) is run once through the CLI for the module;
the tests then read what it stored. A second study in the same database checks that the
memo answers γ already measured, counting the real Evaluator's evaluations.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dse.cli import cli
from dse.evaluation import TrialRecord
from dse.study.api import load_study, run_study
from dse.study.goals import CONSTRAINT_KEY
from dse.study.runner import default_evaluator_factory
from space.config import DecompositionConfig
from space.metrics import parameter_report
from space.presets import load_spec

STUDY_TOML = """
model = "tiny-llama"
tau = 4.0
n_trials = 4
heartbeat_interval = 1

[rules]
rank-one = true
whole-layers = true
skip-early = 1
min-distance = 1

[evaluation]
tasks = ["dse_arc_easy", "dse_piqa"]
limit = 5
batch_size = 8
data_dir = "{data_dir}"

[search]
sampler = "tpe"
seed = 0
paper_seeds = 2

[workload]
prefill_tokens = 8
decode_tokens = 2
warmup = 0
repeats = 1
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("tiny-study")
    path = root / "tiny-real.toml"
    path.write_text(STUDY_TOML.format(data_dir=data_dir))
    storage = f"sqlite:///{root / 'study.db'}"
    args = ["study", "run", str(path), "--storage", storage, "--plots", str(root / "plots"), "--json", "--quiet"]
    first = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    return {"root": root, "storage": storage, "first": json.loads(first.stdout),
            "again": json.loads(again.stdout)}


def test_run_prints_best_front_and_plots(tiny_run: dict[str, Any]) -> None:
    first = tiny_run["first"]
    assert first["created"] and first["counts"]["complete"] == 4
    assert first["run"]["evaluated"] + first["run"]["memoized"] == 4
    assert {Path(p).name for p in first["plots"]} == {"pareto.png", "accuracy_per_task.png", "efficiency.png",
                                                      "history.png", "optuna_history.png"}
    assert all(Path(p).stat().st_size > 1000 for p in first["plots"])
    assert first["pareto_metrics"] == ["edp_ratio", "accuracy_drop_pp"]


def test_running_again_resumes_instead_of_starting_over(tiny_run: dict[str, Any]) -> None:
    again = tiny_run["again"]
    assert not again["created"]
    assert again["counts"] == tiny_run["first"]["counts"]
    assert again["run"]["stopped_by"] == "nothing to do" and again["run"]["evaluated"] == 0


def test_trials_hold_every_measurement(tiny_run: dict[str, Any]) -> None:
    handle = load_study("tiny-real", storage=tiny_run["storage"])
    spec = load_spec("tiny-llama")
    baseline = handle.baseline
    assert baseline["per_task"].keys() == {"dse_arc_easy", "dse_piqa"}
    assert baseline["energy_method"] and baseline["latency_s"] > 0
    for trial in handle.study.trials:
        attrs = trial.user_attrs
        assert trial.state.name == "COMPLETE"
        assert set(TrialRecord.model_fields) - {"per_doc", "standins"} <= set(attrs)  # per_doc: memo only
        assert {task: rec["n_docs"] for task, rec in attrs["per_task"].items()} == {"dse_arc_easy": 5, "dse_piqa": 5}
        gamma = DecompositionConfig(**{k: attrs["gamma"][k] for k in ("layers", "tensors", "rank")})
        report = parameter_report(spec, gamma)
        assert attrs["params"] == report.params_after
        assert attrs["param_reduction_pct"] == pytest.approx(report.param_reduction_pct)
        assert attrs["accuracy_drop_pp"] == pytest.approx(100 * (attrs["baseline_accuracy"] - attrs["accuracy"]))
        assert attrs["edp_ratio"] == pytest.approx(attrs["latency_ratio"] * attrs["energy_ratio"])
        assert attrs["energy_method"] and attrs["versions"]["lm_eval"]
        assert trial.constraints[CONSTRAINT_KEY] == pytest.approx(attrs["accuracy_drop_pp"] - 4.0, abs=1e-6)


def test_best_feasible_respects_tau(tiny_run: dict[str, Any]) -> None:
    handle = load_study("tiny-real", storage=tiny_run["storage"])
    feasible = [r for r in handle.trials() if r["accuracy_drop_pp"] < 4.0]
    best = handle.best()
    if not feasible:
        assert best is None
        return
    assert best["accuracy_drop_pp"] < 4.0
    assert best["edp_ratio"] == min(r["edp_ratio"] for r in feasible)


def test_memo_answers_measured_gamma_in_another_study(tiny_run: dict[str, Any], data_dir: Path) -> None:
    first = load_study("tiny-real", storage=tiny_run["storage"])
    measured = {r["gamma_hash"] for r in first.trials()}
    made: list[Any] = []

    def factory(definition: Any, *, progress: bool = True) -> Any:
        made.append(default_evaluator_factory(definition, progress=progress))
        return made[-1]

    second = run_study(first.definition.with_overrides(name="tiny-again", n_trials=3), evaluator_factory=factory,
                       progress=False, plots=False)
    rows = second.trials()
    new = {r["gamma_hash"] for r in rows if not r["memoized"]}
    assert made[0].evaluations == len(new)
    assert all(r["gamma_hash"] in measured for r in rows if r["memoized"])
    # Both paper seeds were measured by the first study: answered from the memo.
    assert rows[0]["memoized"] and rows[1]["memoized"] and rows[0]["memo_study"] == "tiny-real"


BUDGET_TOML = """
model = "tiny-llama"
objective = "budget"
min_param_reduction_pct = {budget}
tau = 100.0
n_trials = 2

[rules]
rank-one = false
whole-layers = false
skip-early = false
min-distance = false

[evaluation]
tasks = ["dse_arc_easy"]
limit = 5
batch_size = 8
data_dir = "{data_dir}"
measure_latency = false
measure_energy = false

[search]
encoding = "profile"
keep_min = 0.5
seed = 0
"""


def test_budget_study_runs_and_reports_its_front_against_the_reduction(tmp_path: Path, data_dir: Path) -> None:
    # The budget goal's one metric is the accuracy drop: its report pairs it with the
    # parameter reduction (it once asked for the drop twice and exited 2 after the run).
    path = tmp_path / "tiny-budget.toml"
    path.write_text(BUDGET_TOML.format(data_dir=data_dir, budget=1.0))
    args = ["study", "run", str(path), "--storage", f"sqlite:///{tmp_path / 'b.db'}", "--no-plots", "--json", "--quiet"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["pareto_metrics"] == ["param_reduction_pct", "accuracy_drop_pp"]
    assert report["counts"]["complete"] == 2
    assert report["best"]["param_reduction_pct"] >= 1.0 and report["pareto"]


def test_unreachable_budget_is_one_line_before_any_trial(tmp_path: Path, data_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from dse.cli import main

    # tiny-llama's decomposable tensors are 5.5 % of its parameters: keep 0.5 removes 2.8 %
    path = tmp_path / "tiny-budget.toml"
    path.write_text(BUDGET_TOML.format(data_dir=data_dir, budget=5.0))
    db = tmp_path / "b.db"
    with pytest.raises(SystemExit) as exited:
        main(["study", "run", str(path), "--storage", f"sqlite:///{db}", "--no-plots", "--quiet"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    lines = [line for line in (out + err).splitlines() if line.strip()]
    assert len(lines) == 1 and "min_param_reduction_pct = 5 is out of reach" in lines[0]
    assert "at most 2.82 %" in lines[0] and not db.exists()
