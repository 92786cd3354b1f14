"""Group-sequential decisions: boundaries, the three feasibility modes, and their error rates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_decisions import _stats, simulate
from objectives.paired import DropEstimate, paired_stats
from objectives.sequential import SequentialDecider, obf_boundaries, obf_spending
from space.errors import InvalidConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_boundaries_equal_published_obrien_fleming_values() -> None:
    # gsDesign::gsDesign(k=5, test.type=1, alpha=0.025, sfu=sfLDOF)$upper$bound
    published = (4.8769, 3.3569, 2.6803, 2.2898, 2.0310)
    assert obf_boundaries((0.2, 0.4, 0.6, 0.8, 1.0), 0.025) == pytest.approx(published, abs=2e-4)
    assert obf_boundaries((1.0,), 0.025) == pytest.approx((1.959964,), abs=1e-5)
    assert obf_spending(1.0, 0.025) == pytest.approx(0.025)
    assert obf_spending(0.1, 0.025) < 1e-9


def test_unequal_looks_spend_what_the_function_says() -> None:
    # Looks where chunks happened to land: the bounds decrease, the last is near the fixed-sample 1.96.
    bounds = obf_boundaries((0.13, 0.5, 0.61, 1.0), 0.025)
    assert list(bounds) == sorted(bounds, reverse=True)
    assert 1.96 < bounds[-1] < 2.05


@pytest.mark.parametrize("fractions", [(), (0.5, 0.5), (0.0, 1.0), (0.5, 1.2)])
def test_bad_look_fractions_are_refused(fractions: tuple[float, ...]) -> None:
    with pytest.raises(InvalidConfigError, match="fractions"):
        obf_boundaries(fractions, 0.025)


def _estimate(drop: float, low: float, high: float) -> DropEstimate:
    return DropEstimate(drop_pp=drop, ci_low_pp=low, ci_high_pp=high, per_task={}, aggregate="mean",
                        confidence=0.95, n_docs=0, complete=True)


@pytest.mark.parametrize(
    ("mode", "interval", "feasible", "decided"),
    [
        ("point", (3.0, -1.0, 7.0), True, True),  # point below τ: feasible whatever the interval
        ("point", (4.0, 1.0, 7.0), False, True),  # a drop of exactly τ is not below τ (Def. 1)
        ("confident", (3.0, -1.0, 7.0), False, False),  # straddles τ: not shown feasible
        ("confident", (1.0, -1.0, 3.5), True, True),
        ("adaptive", (3.0, -1.0, 7.0), False, False),
    ],
)
def test_final_look_decides_by_mode(mode: str, interval: tuple[float, float, float], feasible: bool,
                                    decided: bool) -> None:
    decider = SequentialDecider(tau=4.0, confidence=0.95, mode=mode, planned_docs=100)  # type: ignore[arg-type]
    decision = decider.look(lambda c: _estimate(*interval), 100, final=True)
    assert decision is not None
    assert (decision.feasible, decision.decided, decision.docs, decision.looks) == (feasible, decided, 100, 1)
    assert "τ=4" in decision.reason and "100 documents" in decision.reason


def test_early_stop_and_adaptive_continuation() -> None:
    decider = SequentialDecider(tau=4.0, confidence=0.95, mode="adaptive", planned_docs=400, min_docs=100)
    # Straddling τ at 100 documents: evaluate more; below τ at 200: feasible, decided by 200 documents.
    assert decider.look(lambda c: _estimate(3.0, 1.0, 6.0), 100, final=False) is None
    decision = decider.look(lambda c: _estimate(1.0, -1.0, 3.0), 200, final=False)
    assert decision is not None and decision.feasible and decision.docs == 200 and not decision.stopped_early
    # Above τ before the last look: an early stop.
    stop = SequentialDecider(tau=4.0, confidence=0.95, mode="point", planned_docs=400)
    decision = stop.look(lambda c: _estimate(9.0, 5.0, 13.0), 50, final=False)
    assert decision is not None and decision.stopped_early and not decision.feasible
    # Without chunks (early_stop=False) only the last look may stop.
    late = SequentialDecider(tau=4.0, confidence=0.95, mode="point", planned_docs=400, early_stop=False)
    assert late.look(lambda c: _estimate(9.0, 5.0, 13.0), 50, final=False) is None


def test_looks_pass_the_corrected_critical_values() -> None:
    decider = SequentialDecider(tau=4.0, confidence=0.95, mode="point", planned_docs=100)
    seen: list[float] = []
    for docs in (20, 40, 60, 80):
        decider.look(lambda c: seen.append(c) or _estimate(0.0, -1.0, 1.0), docs, final=False)
    assert seen == pytest.approx(obf_boundaries((0.2, 0.4, 0.6, 0.8), 0.025))
    with pytest.raises(InvalidConfigError, match="add documents"):
        decider.look(lambda c: _estimate(0.0, -1.0, 1.0), 80, final=False)


def test_simulation_statistics_equal_the_engines() -> None:
    base = [1, 0, 1, 1, 0, 1, 0, 0, 1, 1]
    comp = [0, 0, 1, 0, 1, 1, 0, 0, 1, 0]
    diffs = [b - c for b, c in zip(base, comp, strict=True)]
    engine = paired_stats([float(b) for b in base], [float(c) for c in comp], weight=1.0)
    sim = _stats(float(sum(diffs)), float(sum(d * d for d in diffs)), len(diffs))
    assert (sim.mean, sim.centre, sim.se, sim.df) == pytest.approx((engine.mean, engine.centre, engine.se, engine.df))


def test_repeated_looks_are_corrected() -> None:
    """Forty looks at a γ whose true drop is τ − 1 pp: early stop stays within its error rate.

    The same simulation with the fixed-sample interval at every look (what early stop did
    before) stops more than twice as often: were the looks not corrected, this test fails.
    """

    def run(mode: str) -> dict[str, float]:
        return simulate(mode, 3.0, tau=4.0, confidence=0.9, replications=500, limit=200, max_limit=200, chunk=5,
                        discordance=0.6, seed=1)

    corrected, uncorrected = run("point"), run("uncorrected")
    alpha_side = (1 - 0.9) / 2
    assert corrected["false_stop_rate"] <= alpha_side + 0.01
    assert corrected["false_stop_rate"] <= 1 - 0.9
    assert uncorrected["false_stop_rate"] > alpha_side + 0.03


def test_bench_json_shape() -> None:
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_decisions.py", "--replications", "20", "--json", "--limit", "100",
         "--max-limit", "200", "--chunk", "50"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    data = json.loads(out.stdout)
    assert set(data) == {"tau_pp", "confidence", "results"}
    assert (data["tau_pp"], data["confidence"]) == (4.0, 0.95)
    assert [(r["mode"], r["true_drop_pp"]) for r in data["results"]] == [
        (mode, drop) for mode in ("point", "confident", "adaptive") for drop in (2.0, 3.0, 4.0, 5.0, 7.0)
    ]
    for row in data["results"]:
        assert set(row) == {"mode", "true_drop_pp", "false_stop_rate", "false_feasible_rate", "mean_docs"}
        assert 0.0 <= row["false_stop_rate"] <= 1.0 and 0.0 <= row["false_feasible_rate"] <= 1.0
        assert 0 < row["mean_docs"] <= (200 if row["mode"] == "adaptive" else 100)


def test_document_order_is_seeded_shared_and_prefix_stable(data_dir: Path) -> None:
    from objectives.accuracy import AccuracyObjective

    def order(limit: int, seed: int | None) -> list[int]:
        objective = AccuracyObjective(["dse_arc_easy"], limit=limit, data_dir=data_dir, show_progress=False,
                                      order_seed=seed)
        return [index for _, index in objective.documents()["dse_arc_easy"]]

    assert order(5, None) == [0, 1, 2, 3, 4]
    seeded = order(5, 0)
    assert seeded == order(5, 0) and seeded != order(5, 1) and seeded != [0, 1, 2, 3, 4]
    assert max(seeded) > 20  # a sample of the whole file, not its head
    assert order(10, 0)[:5] == seeded  # more documents extend the same order (adaptive mode)
