"""Screened trials in a study: the runner's hook into the KL screen (dse/screen.py), on the fake evaluator."""

from __future__ import annotations

from typing import Any

import pytest

from dse.screen import decide
from space.config import DecompositionConfig

TAU = 4.0


def test_screened_trials_are_recorded_infeasible_off_every_front_and_not_memoized(
    make_definition: Any, fake_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from study_fakes import expected_drop

    from dse.screen import ScreenDecision
    from dse.study.api import run_study
    from dse.study.runner import Worker
    from space.presets import load_spec

    spec = load_spec("tiny-llama")
    seen: list[str] = []

    def fake_screen(self: Worker, gamma: DecompositionConfig) -> ScreenDecision:
        # a KL that tracks the fake's drop: the real rule then decides
        trials = self.p.study.get_trials(deepcopy=False)
        history = [t.user_attrs for t in trials if t.state.name == "COMPLETE"]
        seen.append(gamma.describe(spec))
        return decide(expected_drop(spec, gamma) / 100, history, TAU, min_trials=3)

    monkeypatch.setattr(Worker, "_screen_decision", fake_screen)
    definition = make_definition(n_trials=14, screen=True, rules={"skip-early": 0, "min-distance": 1})
    handle = run_study(definition, evaluator_factory=fake_factory, progress=False, plots=False)
    rows = handle.trials()
    screened = [r for r in rows if r["screened"]]
    evaluated = [r for r in rows if r["state"] == "COMPLETE" and not r["screened"] and not r["rejected"]]
    assert screened, "the fake's early layers cost 6 pp each: some γ are surely above τ"
    assert all(r["kl_divergence"] is not None for r in evaluated)  # recorded for every trial
    for row in screened:
        assert not row["feasible"] and row["screen_reason"].startswith("KL ")
        assert row["kl_divergence"] > 2 * max(r["kl_divergence"] for r in evaluated if r["drop_ci_low_pp"] < TAU)
    assert handle.counts()["screened"] == len(screened)
    on_fronts = {r["number"] for r in handle.pareto_front("param_reduction_pct", "accuracy_drop_pp",
                                                          feasible_only=False)}
    assert not on_fronts & {r["number"] for r in screened}
    assert len(seen) == len(screened) + sum(1 for r in evaluated if not r["memoized"])
