"""The search-efficiency replay: stepped parameters, the measured table, trials to the optimum."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import optuna
import pytest

from benchmarks.bench_search_measure import grid, paired
from benchmarks.bench_search_table import GridProfile, Table, grid_encoding, make_study_sampler, replay, summary
from dse.study.encoding import Param
from dse.study.goals import standin_ratios
from dse.study.search_space import build_search_space
from space.metrics import parameter_report
from space.presets import load_spec

KEEPS = grid(0.5, 1.0, 0.1)
SLOPES = grid(-1.0, 1.0, 0.5)


def test_a_stepped_float_is_only_ever_suggested_on_its_grid() -> None:
    param = Param("keep", "float", 0.5, 1.0, step=0.05)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    values = {round(param.suggest(study.ask()), 9) for _ in range(200)}
    assert values <= {round(0.5 + 0.05 * i, 9) for i in range(11)}
    assert len(values) == 11


def test_grid_includes_both_ends_and_refuses_a_partial_step() -> None:
    assert grid(0.5, 1.0, 0.05) == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]
    assert grid(-1.0, 1.0, 0.25)[4] == 0.0
    with pytest.raises(SystemExit, match="whole number of steps"):
        grid(0.5, 1.0, 0.3)


def test_paired_mean_and_block_standard_error() -> None:
    import torch

    base = torch.zeros(33)
    nll = torch.tensor([0.0] + [1.0] * 16 + [3.0] * 16)  # the first token is not scored twice
    mean, se = paired(nll[1:], base[1:], 16)
    assert mean == pytest.approx(2.0)
    assert se == pytest.approx(math.sqrt(2.0) / math.sqrt(2))  # block means 1 and 3: sd √2, two blocks


def _table(drop_of: Any) -> dict[str, Any]:
    """A tiny-llama profile grid whose ΔNLL is ``drop_of(method, keep, slope)``."""
    spec = load_spec("tiny-llama")
    space = build_search_space(spec, {}, methods=("svd", "asvd"), keep_min=0.5)
    encoding = GridProfile(space, 0.1, 0.5)
    points = []
    for method in ("svd", "asvd"):
        for keep in KEEPS:
            for slope in SLOPES:
                gamma = encoding.decode({"keep": keep, "slope": slope, "method": method})
                reduction = parameter_report(spec, gamma).param_reduction_pct if gamma.layers else 0.0
                points.append({"method": method, "keep": keep, "slope": slope, "se": 0.01,
                               "delta_nll": drop_of(method, keep, slope), "param_reduction_pct": reduction})
    return {"model": "tiny-llama", "methods": ["svd", "asvd"], "keep": KEEPS, "slope": SLOPES, "points": points,
            "fidelity": "synthetic", "paper": []}


def _drop(method: str, keep: float, slope: float) -> float:
    # asvd is better; a negative slope (early layers keep more) hurts less.
    return (1.0 - keep) * (1.0 if method == "asvd" else 3.0) + 0.1 * slope


def test_the_optimum_is_the_feasible_cell_removing_the_most_parameters() -> None:
    table = Table(_table(_drop))
    best = table.optimum(0.3)
    feasible = [p for p in table.cells.values() if p["delta_nll"] < 0.3]
    most = max(p["param_reduction_pct"] for p in feasible)
    assert best["best_edp"] == pytest.approx(standin_ratios(most)["edp_ratio"])
    assert {o["method"] for o in best["optimal"]} == {"asvd"}
    assert best["n_feasible"] == len(feasible) < best["n_cells"] == 2 * len(KEEPS) * len(SLOPES)


def test_the_table_grid_is_reachable_end_to_end_without_float_drift() -> None:
    import warnings

    data = _table(_drop)
    data["keep"] = grid(0.5, 1.0, 0.05)  # 0.55 - 0.5 is 0.050000000000000044 in floats
    encoding = grid_encoding(data)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    with warnings.catch_warnings():
        # Optuna warns (and drops keep 1.0) when the range is not a whole number of steps.
        warnings.simplefilter("error")
        keeps = set()
        for _ in range(300):
            trial = study.ask()
            encoding.suggest(trial)
            keeps.add(round(trial.params["keep"], 4))
    assert keeps == set(data["keep"])


def test_a_table_missing_cells_is_refused() -> None:
    data = _table(_drop)
    data["points"].pop()
    with pytest.raises(ValueError, match="measure the rest"):
        Table(data)


@pytest.mark.parametrize("name", ["random", "tpe", "tpe-independent"])
def test_replay_stops_at_the_optimum_and_counts_distinct_gammas(name: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    table = Table(_table(_drop))
    best = table.optimum(0.3)
    space = build_search_space(load_spec("tiny-llama"), {}, methods=("svd", "asvd"), keep_min=0.5)
    run = replay(make_study_sampler(name, 0, 300), GridProfile(space, 0.1, 0.5), table, 0.3, 300, best["best_edp"])
    assert run["trials"] is not None and 1 <= run["distinct"] <= run["trials"] <= 300
    never = replay(make_study_sampler(name, 0, 5), GridProfile(space, 0.1, 0.5), table, 0.3, 5, -1.0)
    assert never["trials"] is None and never["distinct"] <= 5


def test_summary_counts_a_miss_as_budget_plus_one() -> None:
    stats = summary([1, 3, None, 5], budget=10)
    assert stats["found"] == 3 and stats["max"] == 11 and stats["median"] == 4


def test_bad_thresholds_are_one_line_and_exit_2() -> None:
    command = [sys.executable, "benchmarks/bench_search_table.py", "--table", "x.json", "--ppl-ratios", "0.9"]
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["--ppl-ratios must all be above 1, got '0.9'"]


def test_measure_does_nothing_only_when_the_table_holds_every_cell(tmp_path: Any) -> None:
    import argparse
    import json

    from benchmarks.bench_search_measure import _complete

    out = tmp_path / "table.json"
    args = argparse.Namespace(out=out, methods="svd,asvd", keep_min=0.5, keep_step=0.1, slope_step=0.5)
    assert not _complete(args)
    data = _table(_drop) | {"paper": [{"label": "Table IV 6%"}]}
    out.write_text(json.dumps(data))
    assert _complete(args)
    data["points"].pop()
    out.write_text(json.dumps(data))
    assert not _complete(args)
