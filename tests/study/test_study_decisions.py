"""Stored trials judged under the study's current τ and mode, after a forced change."""

from __future__ import annotations

from typing import Any

from dse.study.api import run_study


def _run(definition: Any, factory: Any, **kwargs: Any) -> Any:
    return run_study(definition, evaluator_factory=factory, progress=False, plots=False, **kwargs)


def test_forced_tau_change_rejudges_best_pareto_and_counts(make_definition, fake_factory) -> None:  # type: ignore[no-untyped-def]
    first = _run(make_definition(n_trials=6, tau=7.0), fake_factory)
    rows = [r for r in first.trials() if r["state"] == "COMPLETE" and not r["rejected"]]
    drops = {r["number"]: r["accuracy_drop_pp"] for r in rows}
    assert {r["number"] for r in rows if r["feasible"]} == {n for n, d in drops.items() if d < 7.0}
    # The fake's interval is drop ± 1 pp: feasible with confidence when drop + 1 < τ.
    assert first.counts()["feasible_confident"] == sum(1 for d in drops.values() if d + 1.0 < 7.0)

    fresh = type(fake_factory)  # the study conftest's FakeFactory, without importing conftest by name
    tighter = _run(make_definition(n_trials=6, tau=2.5), fresh(), force=True)
    feasible = {r["number"] for r in tighter.trials() if r["feasible"]}
    assert feasible == {n for n, d in drops.items() if d < 2.5}
    assert feasible < {n for n, d in drops.items() if d < 7.0}, "the fake has drops between 2.5 and 7 pp"
    best = tighter.best()
    assert best is not None and best["accuracy_drop_pp"] < 2.5
    assert all(r["accuracy_drop_pp"] < 2.5 for r in tighter.pareto_front())
    changed = [r for r in tighter.trials() if r["number"] in drops and 2.5 <= drops[r["number"]] < 7.0]
    assert changed and all("re-judged under τ=2.5" in r["decided_by"] for r in changed)

    confident = _run(make_definition(n_trials=6, tau=2.5, evaluation={"feasibility": "confident"}), fresh(),
                     force=True)
    assert {r["number"] for r in confident.trials() if r["feasible"]} == {
        n for n, d in drops.items() if d + 1.0 < 2.5}
