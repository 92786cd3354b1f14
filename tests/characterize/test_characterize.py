"""`dse.characterize`: sweeps as studies of fixed γ (fake evaluator: the engine path in milliseconds)."""

from __future__ import annotations

from typing import Any

import optuna
import pytest
from study_fakes import FakeEvaluator

from dse.characterize_api import characterize, wilson_interval
from dse.characterize_sweeps import sweep_points
from dse.study.api import load_study
from dse.study.definition import StudyDefinition
from space.errors import DseError
from space.presets import load_spec

TINY = load_spec("tiny-llama")
TASKS = ("dse_arc_easy", "dse_piqa")


class Factory:
    """Counts evaluations over every evaluator it made; may interrupt on the n-th one."""

    def __init__(self, interrupt_on: int | None = None) -> None:
        self.interrupt_on = interrupt_on
        self.made: list[FakeEvaluator] = []

    def __call__(self, definition: StudyDefinition, *, progress: bool = False) -> FakeEvaluator:
        evaluator = FakeEvaluator(definition, interrupt_on=self.interrupt_on)
        self.made.append(evaluator)
        return evaluator

    @property
    def evaluations(self) -> int:
        return sum(e.evaluations for e in self.made)


def _run(storage: str, sweep: str = "layers", factory: Any = None, **kwargs: Any) -> dict[str, Any]:
    return characterize("tiny-llama", sweep, tasks=TASKS, limit=5, storage=storage, progress=False,
                        evaluator_factory=factory or Factory(), **kwargs)


def _complete_hashes(storage: str, name: str) -> list[str]:
    study = load_study(name, storage=storage).study
    return [t.user_attrs["gamma_hash"] for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))]


def test_layers_sweep_measures_each_layer_once_with_the_json_contract(storage_url: str) -> None:
    factory = Factory()
    result = _run(storage_url, factory=factory)
    assert result["sweep"] == "layers" and factory.evaluations == 4
    points = result["points"]
    assert [p["layers"] for p in points] == [[0], [1], [2], [3]]
    first = points[0]
    for key in ("layers", "tensors", "rank", "accuracy_drop_pp", "drop_ci_pp", "param_reduction_pct", "per_task",
                "latency_ratio", "energy_ratio", "memory_ratio", "latency_ratio_ci"):
        assert key in first, key
    assert first["tensors"] == list(TINY.tensor_names) and first["rank"] == 1
    # The fake's damage: 6 pp for layers 0-1, 1.5 + 0.25·layer after; intervals ±1.
    assert [p["accuracy_drop_pp"] for p in points] == pytest.approx([6.0, 6.0, 2.0, 2.25])
    assert first["drop_ci_pp"] == pytest.approx([5.0, 7.0])
    task = first["per_task"]["dse_arc_easy"]
    assert task["accuracy"] == pytest.approx(0.54) and task["n_docs"] == 5
    assert task["accuracy_ci"][0] < 0.54 < task["accuracy_ci"][1]
    assert result["baseline"]["per_task"] == {"dse_arc_easy": 0.6, "dse_piqa": 0.7}


def test_a_rerun_measures_nothing_and_adds_no_trial(storage_url: str) -> None:
    first = _run(storage_url)
    again = Factory()
    second = _run(storage_url, factory=again)
    assert again.evaluations == 0  # nothing queued: the evaluator is not even built
    assert not again.made
    assert second["points"] == first["points"]
    assert len(_complete_hashes(storage_url, first["study"])) == 4


def test_ctrl_c_then_resume_measures_every_point_exactly_once(storage_url: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(storage_url, factory=Factory(interrupt_on=3))
    name = next(iter(optuna.get_all_study_names(storage_url)))
    assert len(_complete_hashes(storage_url, name)) == 2
    resumed = Factory()
    result = _run(storage_url, factory=resumed)
    assert resumed.evaluations == 2  # the interrupted γ and the one never started
    hashes = _complete_hashes(storage_url, name)
    assert sorted(hashes) == sorted({p.gamma.hash(TINY) for p in sweep_points(TINY, "layers")})
    assert all(p["measured"] for p in result["points"])


def test_show_reports_the_stored_points_and_measures_nothing(storage_url: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        _run(storage_url, factory=Factory(interrupt_on=3))
    shown = Factory()
    result = _run(storage_url, factory=shown, measure=False)
    assert not shown.made
    assert [p["measured"] for p in result["points"]] == [True, True, False, False]
    with pytest.raises(DseError, match="unknown study"):
        _run(storage_url, sweep="tensors", measure=False)


def test_all_sweeps_share_measurements_through_the_memo(storage_url: str) -> None:
    factory = Factory()
    result = _run(storage_url, sweep="all", factory=factory)
    assert [r["sweep"] for r in result["sweeps"]] == ["rank", "tensors", "groups", "layers", "case-study"]
    unique = {p.gamma.hash(TINY) for s in ("rank", "tensors", "groups", "layers", "case-study")
              for p in sweep_points(TINY, s)}
    shared = sum(len({p.gamma.hash(TINY) for p in sweep_points(TINY, s)})
                 for s in ("rank", "tensors", "groups", "layers", "case-study"))
    assert shared > len(unique)  # tensors ⊂ groups: the memo must answer those
    assert factory.evaluations == len(unique)
    assert len(result["points"]) == sum(len(r["points"]) for r in result["sweeps"])
    assert all(p["measured"] for p in result["points"])


def test_other_settings_are_another_study_and_the_memo_still_answers(storage_url: str) -> None:
    first = _run(storage_url)
    factory = Factory()
    other = _run(storage_url, factory=factory, efficiency=True, workers=1, name="mine")
    assert other["study"] == "mine" != first["study"]
    assert factory.evaluations == 0  # same measurement settings: every γ from the memo
    assert all(p["memoized"] for p in other["points"])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sweep": "layer"}, "unknown sweep 'layer'"),
    ({"sweep": "distance"}, "needs five layers"),
    ({"sweep": "all", "name": "x"}, "each sweep names its own"),
])
def test_bad_requests_fail_before_anything_is_written(storage_url: str, tmp_path: Any, kwargs: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(DseError, match=message):
        _run(storage_url, **kwargs)
    assert not (tmp_path / "char.db").exists() or not optuna.get_all_study_names(storage_url)


def test_the_package_exposes_the_function() -> None:
    import dse

    assert dse.characterize is characterize  # not shadowed by a submodule of the same name


def test_wilson_interval() -> None:
    low, high = wilson_interval(0.5, 100)  # type: ignore[misc]
    assert low == pytest.approx(0.404, abs=1e-3) and high == pytest.approx(0.596, abs=1e-3)
    assert wilson_interval(0.0, 0) is None
    assert wilson_interval(1.0, 10)[1] == pytest.approx(1.0)  # type: ignore[index]
