"""The optimize loop on a deterministic fake evaluator: what is stored, counted, resumed, refused."""

from __future__ import annotations

from typing import Any

import pytest
from study_fakes import FakeFactory, expected_drop

from dse.evaluation import TrialRecord
from dse.study.api import load_study, resume_study, run_study
from dse.study.goals import CONSTRAINT_EPSILON, CONSTRAINT_KEY, REJECTED_CONSTRAINT, standin_ratios
from dse.study.queries import dominates
from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.presets import load_spec


def _run(definition: Any, factory: FakeFactory, **kwargs: Any) -> Any:
    return run_study(definition, evaluator_factory=factory, progress=False, plots=False, **kwargs)


def test_every_trial_stores_gamma_measurements_and_constraint(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    handle = _run(make_definition(n_trials=6), fake_factory)
    study = handle.study
    assert study.user_attrs["dse:definition"]["model"] == "tiny-llama"
    assert study.user_attrs["dse:baseline"]["accuracy"] == pytest.approx(0.65)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 6
    spec = load_spec("tiny-llama")
    for trial in complete:
        attrs = trial.user_attrs
        # per_doc stays in the memo; stand-ins are set only where one was used.
        assert set(TrialRecord.model_fields) - {"per_doc", "standins"} <= set(attrs)
        assert {"memoized", "feasible", "rejected", "tau", "worker", "trial_seconds"} <= set(attrs)
        gamma = DecompositionConfig(layers=attrs["gamma"]["layers"], tensors=attrs["gamma"]["tensors"],
                                    rank=attrs["gamma"]["rank"])
        assert attrs["gamma_hash"] == gamma.hash(spec)
        assert attrs["accuracy_drop_pp"] == pytest.approx(expected_drop(spec, gamma))
        assert trial.constraints[CONSTRAINT_KEY] == pytest.approx(attrs["accuracy_drop_pp"] - 4.0 + CONSTRAINT_EPSILON)
        assert trial.values == [pytest.approx(attrs["edp_ratio"])]
        assert attrs["feasible"] == (attrs["accuracy_drop_pp"] < 4.0)
    # The two paper seeds came first, scaled to 4 layers and moved past skip-early=1.
    assert [t.user_attrs["gamma_label"] for t in complete[:2]] == ["L[1,3] all r=1", "L[1,2,3] all r=1"]
    assert complete[0].user_attrs["paper_seed"].startswith("Table IV 6%")


def test_best_feasible_respects_tau_and_is_the_least_edp(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    handle = _run(make_definition(n_trials=8), fake_factory)
    rows = handle.trials()
    feasible = [r for r in rows if r["state"] == "COMPLETE" and r["accuracy_drop_pp"] < 4.0]
    assert feasible, "the fake has feasible γ on layers 2 and 3"
    best = handle.best()
    assert best["accuracy_drop_pp"] < 4.0 and best["feasible"]
    assert best["edp_ratio"] == min(r["edp_ratio"] for r in feasible)
    # Optuna agrees: its best trial is feasible and the same value.
    assert handle.study.best_trial.value == pytest.approx(best["edp_ratio"])


def _brute_front(rows: list[dict[str, Any]], metrics: list[str], feasible_only: bool) -> set[str]:
    pool = [r for r in rows if r["state"] == "COMPLETE" and not r["rejected"]
            and (r["feasible"] or not feasible_only) and all(r.get(m) is not None for m in metrics)]
    return {r["gamma_hash"] for r in pool if not any(dominates(o, r, metrics) for o in pool)}


@pytest.mark.parametrize("metrics", [["param_reduction_pct", "accuracy_drop_pp"], ["edp_ratio", "accuracy_drop_pp"],
                                     ["latency_ratio", "memory_ratio", "accuracy_drop_pp"]])
def test_pareto_front_equals_a_brute_force_filter(make_definition, fake_factory, metrics) -> None:  # type: ignore[no-untyped-def]
    definition = make_definition(n_trials=8, rules={"skip-early": 0, "min-distance": 1, "rank-one": True})
    handle = _run(definition, fake_factory)
    rows = handle.trials()
    for feasible_only in (True, False):
        front = handle.pareto_front(*metrics, feasible_only=feasible_only)
        assert {r["gamma_hash"] for r in front} == _brute_front(rows, metrics, feasible_only)
        assert len(front) == len({r["gamma_hash"] for r in front})
        assert all(r["feasible"] for r in front) or not feasible_only


def test_multi_objective_front_matches_optuna(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    handle = _run(make_definition(n_trials=8, objective="reduction-drop",
                                  rules={"skip-early": 0, "min-distance": 1, "rank-one": True}), fake_factory)
    ours = {r["gamma_hash"] for r in handle.pareto_front()}
    optuna_front = {t.user_attrs["gamma_hash"] for t in handle.study.best_trials}
    assert ours == optuna_front


def test_memo_answers_a_repeated_gamma_without_evaluating(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    # tiny-llama's rule-pruned space has 7 γ, so 12 trials must repeat some.
    handle = _run(make_definition(n_trials=12), fake_factory)
    rows = handle.trials()
    distinct = {r["gamma_hash"] for r in rows}
    assert fake_factory.evaluations == len(distinct) < 12
    assert sum(r["memoized"] for r in rows) == 12 - len(distinct)
    for row in rows:
        first = min(o["number"] for o in rows if o["gamma_hash"] == row["gamma_hash"])
        assert row["memoized"] == (row["number"] != first)
    # Another study in the same database, same model and settings: all from the memo.
    again = FakeFactory()
    other = _run(make_definition(name="second", n_trials=4, search={"seed": 9}), again)
    assert again.evaluations == len({r["gamma_hash"] for r in other.trials()} - distinct)
    memo_rows = [r for r in other.trials() if r["memoized"]]
    assert memo_rows and all(r["memo_study"] == "tiny" for r in memo_rows)
    # Other measurement settings are another memo key: measured again.
    third = FakeFactory()
    _run(make_definition(name="third", n_trials=2, evaluation={"limit": 4}), third)
    assert third.evaluations == 2


def test_baseline_is_measured_once_per_model_and_settings(make_definition) -> None:  # type: ignore[no-untyped-def]
    first, second = FakeFactory(), FakeFactory()
    _run(make_definition(n_trials=2), first)
    _run(make_definition(name="other", n_trials=2), second)
    assert [e.baselines for e in first.made] == [1]
    assert [e.baselines for e in second.made] == [0]


def test_hopeless_trials_are_complete_infeasible_with_a_stand_in(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    definition = make_definition(n_trials=7, evaluation={"chunk_size": 2}, search={"paper_seeds": 0})
    handle = _run(definition, fake_factory)
    stopped = [t for t in handle.study.trials if t.user_attrs.get("early_stopped")]
    assert stopped, "γ with layer 1 cost 6 pp > τ + 2 in the fake"
    for trial in stopped:
        assert trial.state.name == "COMPLETE"
        assert trial.constraints[CONSTRAINT_KEY] > 0
        assert trial.user_attrs["edp_ratio"] is None and trial.user_attrs["latency_s"] is None
        expected = standin_ratios(trial.user_attrs["param_reduction_pct"])["edp_ratio"]
        assert trial.values == [pytest.approx(expected)]
        assert "stopped early" in trial.user_attrs["standins"]["edp_ratio"]
    counts = handle.counts()
    assert counts["early_stopped"] == len(stopped) and counts["complete"] == 7
    assert all(not r["early_stopped"] for r in handle.pareto_front(feasible_only=False))


def test_rule_violating_gamma_is_rejected_unmeasured_and_not_counted(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    # Random full-space γ decompose layer 0 half the time, which skip-early=1 excludes.
    definition = make_definition(n_trials=3, rules={"skip-early": 1, "rank-one": True},
                                 search={"encoding": "full", "paper_seeds": 0})
    handle = _run(definition, fake_factory)
    rows = handle.trials()
    rejected = [r for r in rows if r["rejected"]]
    measured = [r for r in rows if not r["rejected"]]
    assert len(measured) == 3
    assert fake_factory.evaluations == sum(not r["memoized"] for r in measured)
    assert rejected, "with seed 1 the random sampler proposes layer 0 at least once"
    assert all(any(k in r["reject_reason"] for k in ("skip-early=1", "nothing", "no tensor")) for r in rejected)
    assert all(r["state"] == "COMPLETE" and r["constraint"] == REJECTED_CONSTRAINT and r["reject_reason"]
               for r in rejected)
    assert handle.run_stats.rejected == len(rejected)
    assert all(not r["rejected"] for r in handle.pareto_front(feasible_only=False))


def test_keyboard_interrupt_fails_one_trial_and_resume_loses_nothing(make_definition) -> None:  # type: ignore[no-untyped-def]
    definition = make_definition(n_trials=5)
    with pytest.raises(KeyboardInterrupt):
        _run(definition, FakeFactory(interrupt_on=3))
    handle = load_study("tiny", storage=definition.storage)
    states = [r["state"] for r in handle.trials()]
    # The third evaluation was interrupted (earlier trials may have come from the memo).
    failed = states.index("FAIL")
    assert states[:failed] == ["COMPLETE"] * failed and states[failed + 1:] == ["WAITING"]  # its γ is queued again
    assert handle.trials()[failed]["fail_reason"] == "interrupted (Ctrl-C)"
    resumed = resume_study("tiny", storage=definition.storage, evaluator_factory=FakeFactory(),
                           progress=False, plots=False)
    rows = resumed.trials()
    assert sum(r["state"] == "COMPLETE" for r in rows) == 5
    assert sum(r["state"] == "FAIL" for r in rows) == 1
    # The interrupted γ is measured first on resume.
    retry = rows[failed + 1]
    assert retry["retry_of"] == failed and retry["gamma_label"] == rows[failed]["gamma_label"]


def test_rerunning_a_finished_study_resumes_without_loading_a_model(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    definition = make_definition(n_trials=3)
    _run(definition, fake_factory)
    again = FakeFactory()
    handle = _run(definition, again)
    assert again.made == [] and len(handle.trials()) == 3
    assert handle.run_stats.stopped_by == "nothing to do" and not handle.created
    more = resume_study("tiny", storage=definition.storage, n_trials=2, evaluator_factory=again,
                        progress=False, plots=False)
    assert more.counts()["complete"] == 5
    bigger = _run(make_definition(n_trials=7), again)
    assert bigger.counts()["complete"] == 7


def test_changed_definition_is_refused_with_a_diff_unless_forced(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    _run(make_definition(n_trials=2), fake_factory)
    changed = make_definition(n_trials=3, tau=3.0, evaluation={"limit": 4})
    with pytest.raises(InvalidConfigError) as info:
        _run(changed, fake_factory)
    message = str(info.value)
    assert "evaluation.limit: 5 -> 4" in message and "tau: 4.0 -> 3.0" in message and "--force" in message
    assert "\n" not in message
    handle = load_study("tiny", storage=changed.storage)
    assert len(handle.trials()) == 2 and handle.definition.tau == 4.0
    forced = _run(changed, fake_factory, force=True)
    assert forced.definition.tau == 3.0 and forced.counts()["complete"] == 3
    assert forced.study.user_attrs["dse:history"][0]["changes"] == ["evaluation.limit: 5 -> 4", "tau: 4.0 -> 3.0"]
    with pytest.raises(InvalidConfigError, match="objective cannot change"):
        _run(make_definition(objective="params"), fake_factory, force=True)


def test_timeout_stops_asking(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    handle = _run(make_definition(n_trials=50, timeout=1e-6), fake_factory)
    assert handle.run_stats.stopped_by == "timeout" and handle.counts()["complete"] == 0


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_each_sampler_runs_a_constrained_study(make_definition, fake_factory, sampler: str) -> None:  # type: ignore[no-untyped-def]
    handle = _run(make_definition(n_trials=4, search={"sampler": sampler, "n_startup_trials": 2, "paper_seeds": 0}),
                  fake_factory)
    assert handle.counts()["complete"] == 4
    assert all(CONSTRAINT_KEY in t.constraints for t in handle.study.trials)
    feasible = [r for r in handle.trials() if r["accuracy_drop_pp"] < 4.0]
    best = handle.best()
    assert (best is None) == (not feasible)
    assert best is None or best["edp_ratio"] == min(r["edp_ratio"] for r in feasible)
