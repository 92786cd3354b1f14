"""optuna-dashboard's own server API on a study database: feasibility, best trials, names, γ."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from study_fakes import FakeFactory

from dse.study.api import run_study
from dse.study.dashboard import DASHBOARD_CONSTRAINTS_ATTR, dashboard_app
from dse.study.goals import CONSTRAINT_KEY

webtest = pytest.importorskip("webtest")
optuna_dashboard = pytest.importorskip("optuna_dashboard")


def _run(definition: Any, factory: FakeFactory) -> Any:
    return run_study(definition, evaluator_factory=factory, progress=False, plots=False)


def _detail(app: Any, name: str) -> dict[str, Any]:
    client = webtest.TestApp(app)
    studies = client.get("/api/studies").json["study_summaries"]
    study_id = next(s["study_id"] for s in studies if s["study_name"] == name)
    return client.get(f"/api/studies/{study_id}").json  # type: ignore[no-any-return]


def _feasible(serialized: dict[str, Any]) -> bool:
    # The dashboard front end's rule: constraints.every(c => c <= 0).
    return all(c <= 0 for c in serialized["constraints"])


def _attrs(serialized: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in serialized["user_attrs"]}


def test_dashboard_marks_every_trial_and_badges_the_feasible_best(make_definition, fake_factory, storage_url) -> None:  # type: ignore[no-untyped-def]
    # τ = 4 on the fake: the γ with most layers have the least EDP and are infeasible.
    handle = _run(make_definition(n_trials=8, tau=4.0), fake_factory)
    plain = _detail(optuna_dashboard.wsgi(storage_url), "tiny")
    ours = _detail(dashboard_app(optuna.storages.RDBStorage(storage_url)), "tiny")
    by_number = {t.number: t for t in handle.study.trials}
    assert len(plain["trials"]) == len(by_number) == 8
    infeasible = 0
    for served in plain["trials"]:
        trial = by_number[served["number"]]
        assert served["constraints"] == [pytest.approx(trial.constraints[CONSTRAINT_KEY])]
        assert _feasible(served) == trial.user_attrs["feasible"] == (trial.user_attrs["accuracy_drop_pp"] < 4.0)
        infeasible += not _feasible(served)
        attrs = _attrs(served)
        canonical = trial.user_attrs["gamma"]
        assert attrs["gamma.layers"] == ",".join(str(x) for x in canonical["layers"])
        assert attrs["gamma.tensors"] == "all" and attrs["gamma.rank"] == "1"
        assert attrs["gamma.method"] == "svd"
    assert 0 < infeasible < 8
    assert plain["objective_names"] == ["edp_ratio"] == ours["objective_names"]
    # Plain optuna-dashboard badges the least EDP, an infeasible trial (its documented limit);
    # the dashboard served by `dse study dashboard` badges Optuna's feasible best.
    least = min((t for t in handle.study.trials), key=lambda t: t.values[0])
    assert not least.user_attrs["feasible"]
    assert [t["number"] for t in plain["best_trials"]] == [least.number]
    assert [t["number"] for t in ours["best_trials"]] == [handle.study.best_trial.number]
    assert all(_feasible(t) for t in ours["best_trials"])
    assert ours["best_trials"][0]["values"] == [pytest.approx(handle.best()["edp_ratio"])]


def test_no_feasible_trial_means_no_best_badge(make_definition, fake_factory, storage_url) -> None:  # type: ignore[no-untyped-def]
    handle = _run(make_definition(n_trials=4, tau=0.5, name="hard"), fake_factory)
    assert not any(t.user_attrs["feasible"] for t in handle.study.trials)
    ours = _detail(dashboard_app(optuna.storages.RDBStorage(storage_url)), "hard")
    assert ours["best_trials"] == []
    assert len(ours["trials"]) == 4 and not any(_feasible(t) for t in ours["trials"])


def test_pareto_goal_front_is_feasible_only(make_definition, fake_factory, storage_url) -> None:  # type: ignore[no-untyped-def]
    handle = _run(make_definition(n_trials=8, objective="reduction-drop", name="front"), fake_factory)
    ours = _detail(dashboard_app(optuna.storages.RDBStorage(storage_url)), "front")
    assert ours["objective_names"] == ["param_reduction_pct", "accuracy_drop_pp"]
    served = sorted(t["number"] for t in ours["best_trials"])
    assert served == sorted(t.number for t in handle.study.best_trials)
    assert served and all(_feasible(t) for t in ours["best_trials"])


def test_studies_written_before_the_list_are_shown_with_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'old.db'}")
    study = optuna.create_study(study_name="old", storage=storage)
    for drop in (1.0, 9.0):
        trial = study.ask()
        trial.set_constraint(CONSTRAINT_KEY, drop - 4.0)  # Optuna 5's format only
        study.tell(trial, 10.0 - drop)
    assert DASHBOARD_CONSTRAINTS_ATTR not in study.trials[0].system_attrs
    ours = _detail(dashboard_app(storage), "old")
    assert [t["constraints"] for t in ours["trials"]] == [[-3.0], [5.0]]
    assert [t["number"] for t in ours["best_trials"]] == [0]
    assert DASHBOARD_CONSTRAINTS_ATTR not in optuna.load_study(study_name="old", storage=storage).trials[0].system_attrs


def test_best_save_model_writes_the_best_trials_gamma(  # type: ignore[no-untyped-def]
        make_definition, fake_factory, storage_url, tmp_path, capsys) -> None:
    import json

    from click.testing import CliRunner

    from dse import saving
    from dse.cli import cli

    handle = _run(make_definition(n_trials=5, tau=4.0), fake_factory)
    best = handle.best()
    out = tmp_path / "best-model"
    result = CliRunner().invoke(cli, ["study", "best", "tiny", "--storage", storage_url, "--save-model", str(out),
                                      "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["best"]["number"] == best["number"] and payload["saved_model"] == str(out)
    assert saving.read_manifest(out).gamma == best["gamma"]
    config = json.loads((out / "config.json").read_text())
    assert config["lowrank_dse"]["gamma"] == best["gamma"]
    from dse.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["study", "best", "tiny", "--storage", storage_url, "--save-model", str(tmp_path / "x"), "--trial", "99"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no trial 99" in err[0]
