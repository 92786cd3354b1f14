"""Paired accuracy drop: known values on constructed per-document results."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objectives.accuracy import AccuracyMeasurement, TaskAccuracy
from objectives.paired import certainly_above, certainly_below, paired_drop, t_quantile
from space.errors import InvalidConfigError

# Student's t quantiles from tables (scipy.stats.t.ppf).
T_0975_DF21 = 2.079613844727662
T_0975_DF4 = 2.7764451051977987


def measurement(per_task: dict[str, list[float]], planned: dict[str, int] | None = None) -> AccuracyMeasurement:
    tasks = {
        name: TaskAccuracy(
            task=name,
            metric="acc",
            accuracy=sum(docs) / len(docs) if docs else 0.0,
            n_docs=len(docs),
            n_planned=(planned or {}).get(name, len(docs)),
            per_doc=list(docs),
        )
        for name, docs in per_task.items()
    }
    return AccuracyMeasurement(
        per_task=tasks,
        accuracy=sum(t.accuracy for t in tasks.values()) / len(tasks),
        complete=all(t.n_docs == t.n_planned for t in tasks.values()),
        n_docs_total=sum(t.n_docs for t in tasks.values()),
        limit=None,
        seconds=0.0,
        lm_eval_version="test",
    )


def adjusted_interval(differences: list[float], t: float) -> tuple[float, float]:
    """Bonett-Price: add +1 and -1 pseudo-differences, then a t interval (in pp)."""
    values = [*differences, 1.0, -1.0]
    m = len(values)
    centre = sum(values) / m
    variance = sum((v - centre) ** 2 for v in values) / (m - 1)
    half = t * math.sqrt(variance / m)
    return (centre - half) * 100, (centre + half) * 100


def test_identical_results_have_no_drop() -> None:
    docs = [1.0, 0.0, 1.0, 1.0, 0.0] * 4
    estimate = paired_drop(measurement({"a": docs}), measurement({"a": docs}))
    assert estimate.drop_pp == 0.0
    assert estimate.ci_low_pp < 0.0 < estimate.ci_high_pp
    assert estimate.ci_low_pp == pytest.approx(-estimate.ci_high_pp)
    assert estimate.n_docs == 20 and estimate.complete


def test_known_drop_and_interval_on_twenty_documents() -> None:
    # 20 documents: 6 the compressed model gets wrong, 1 it newly gets right, 13 agree.
    base = [1.0] * 6 + [0.0] + [1.0] * 7 + [0.0] * 6
    comp = [0.0] * 6 + [1.0] + [1.0] * 7 + [0.0] * 6
    estimate = paired_drop(measurement({"arc": base}), measurement({"arc": comp}))
    assert estimate.drop_pp == pytest.approx(25.0)  # (6 - 1) / 20
    low, high = adjusted_interval([1.0] * 6 + [-1.0] + [0.0] * 13, T_0975_DF21)
    assert estimate.ci_low_pp == pytest.approx(low)
    assert estimate.ci_high_pp == pytest.approx(high)
    # 6 lost against 1 gained is not yet significant (McNemar's exact p = 0.125).
    assert (low, high) == pytest.approx((-4.40, 49.86), abs=0.01)
    task = estimate.per_task["arc"]
    assert task.baseline_accuracy == pytest.approx(0.65) and task.accuracy == pytest.approx(0.40)
    assert task.drop_pp == pytest.approx(25.0) and task.n_docs == 20


def test_drop_is_negative_when_accuracy_rises() -> None:
    estimate = paired_drop(measurement({"a": [0.0, 0.0, 1.0, 0.0]}), measurement({"a": [1.0, 1.0, 1.0, 0.0]}))
    assert estimate.drop_pp == pytest.approx(-50.0)


def test_agreement_on_a_few_documents_does_not_make_a_point_interval() -> None:
    # Three documents, all lost: a plain paired t interval would have zero width.
    estimate = paired_drop(
        measurement({"a": [1.0, 1.0, 1.0]}, {"a": 100}), measurement({"a": [0.0, 0.0, 0.0]}, {"a": 100})
    )
    assert estimate.drop_pp == 100.0
    low, high = adjusted_interval([1.0, 1.0, 1.0], T_0975_DF4)
    assert estimate.ci_low_pp == pytest.approx(low) and estimate.ci_high_pp == pytest.approx(min(high, 100.0))
    assert estimate.ci_low_pp < 4.0
    assert not certainly_above(estimate, 4.0)


def test_fifty_lost_documents_are_certainly_above_tau() -> None:
    estimate = paired_drop(measurement({"a": [1.0] * 50}), measurement({"a": [0.0] * 50}))
    assert estimate.ci_low_pp == pytest.approx(88.43, abs=0.01) and estimate.ci_high_pp == 100.0
    assert certainly_above(estimate, 4.0)
    assert not certainly_below(estimate, 4.0)


def test_a_prefix_of_the_baseline_is_compared_on_that_prefix() -> None:
    base = measurement({"a": [1.0, 1.0, 0.0, 0.0, 1.0, 1.0], "b": [1.0, 0.0, 1.0, 0.0]})
    partial = measurement({"a": [0.0, 1.0], "b": [1.0, 0.0]}, {"a": 6, "b": 4})
    estimate = paired_drop(base, partial)
    assert estimate.per_task["a"].n_docs == 2 and estimate.per_task["a"].drop_pp == pytest.approx(50.0)
    assert estimate.per_task["b"].n_docs == 2 and estimate.per_task["b"].drop_pp == 0.0
    assert estimate.n_docs == 4
    assert not estimate.complete
    assert estimate.drop_pp == pytest.approx(25.0)


def test_mean_weighted_and_max_aggregates() -> None:
    base = measurement({"a": [1.0] * 10, "b": [1.0] * 30})
    comp = measurement({"a": [0.0] * 2 + [1.0] * 8, "b": [0.0] * 3 + [1.0] * 27})
    mean = paired_drop(base, comp, aggregate="mean")
    weighted = paired_drop(base, comp, aggregate="weighted")
    worst = paired_drop(base, comp, aggregate="max")
    assert mean.per_task["a"].drop_pp == pytest.approx(20.0)
    assert mean.per_task["b"].drop_pp == pytest.approx(10.0)
    assert mean.drop_pp == pytest.approx(15.0)
    assert weighted.drop_pp == pytest.approx((10 * 20.0 + 30 * 10.0) / 40)
    assert worst.drop_pp == pytest.approx(20.0)
    assert worst.ci_low_pp == pytest.approx(max(t.ci_low_pp for t in worst.per_task.values()))
    assert worst.ci_high_pp == pytest.approx(max(t.ci_high_pp for t in worst.per_task.values()))
    # Halving each task's weight makes the mean's interval narrower than the wider task's.
    assert mean.ci_high_pp - mean.ci_low_pp < max(t.ci_high_pp - t.ci_low_pp for t in mean.per_task.values())
    assert {mean.aggregate, weighted.aggregate, worst.aggregate} == {"mean", "weighted", "max"}


def test_mean_aggregate_interval_combines_task_errors() -> None:
    base = measurement({"a": [1.0] * 10, "b": [1.0] * 10})
    comp = measurement({"a": [0.0] * 2 + [1.0] * 8, "b": [0.0] * 2 + [1.0] * 8})
    estimate = paired_drop(base, comp)
    task = estimate.per_task["a"]
    # Two identical, independent tasks: the mean's standard error is the task's / sqrt(2),
    # with Welch-Satterthwaite df = 2 * 11 = 22.
    task_half = (task.ci_high_pp - task.ci_low_pp) / 2
    task_se = task_half / t_quantile(0.975, 11)
    mean_half = (estimate.ci_high_pp - estimate.ci_low_pp) / 2
    assert mean_half == pytest.approx(t_quantile(0.975, 22) * task_se / math.sqrt(2))


def test_continuous_per_document_values_are_paired_too() -> None:
    # TruthfulQA MC2: probability mass per document, not 0/1.
    base = measurement({"mc2": [0.6, 0.4, 0.8, 0.5]})
    comp = measurement({"mc2": [0.5, 0.4, 0.6, 0.5]})
    estimate = paired_drop(base, comp)
    assert estimate.drop_pp == pytest.approx(7.5)
    assert estimate.ci_low_pp < 7.5 < estimate.ci_high_pp


def test_higher_confidence_widens_the_interval() -> None:
    base, comp = measurement({"a": [1.0] * 20 + [0.0] * 20}), measurement({"a": [1.0] * 15 + [0.0] * 25})
    narrow = paired_drop(base, comp, confidence=0.8)
    wide = paired_drop(base, comp, confidence=0.99)
    assert wide.ci_low_pp < narrow.ci_low_pp < narrow.ci_high_pp < wide.ci_high_pp
    assert wide.confidence == 0.99


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggregate": "median"}, "unknown aggregate 'median'; allowed: mean, max, weighted"),
        ({"confidence": 1.0}, "confidence must be strictly between 0 and 1"),
        ({"confidence": 0.0}, "confidence must be strictly between 0 and 1"),
    ],
)
def test_bad_options_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    base = measurement({"a": [1.0]})
    with pytest.raises(InvalidConfigError, match=message):
        paired_drop(base, base, **kwargs)  # type: ignore[arg-type]


def test_different_tasks_or_documents_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="different tasks"):
        paired_drop(measurement({"a": [1.0]}), measurement({"b": [1.0]}))
    with pytest.raises(InvalidConfigError, match="same tasks and limit"):
        paired_drop(measurement({"a": [1.0] * 4}), measurement({"a": [1.0] * 2}, {"a": 3}))


@pytest.mark.parametrize(
    ("p", "df", "expected"),
    [
        (0.975, 1, 12.706204736174698),
        (0.975, 2, 4.302652729749464),
        (0.975, 10, 2.2281388519862735),
        (0.995, 5, 4.032142983557536),
        (0.95, 30, 1.6972608943617378),
        (0.975, 1000, 1.9623390808264074),
        (0.975, 10.7, 2.2281388519862735),  # non-integer df rounds down
    ],
)
def test_t_quantile_matches_tables(p: float, df: float, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, rel=1e-8)


binary = st.lists(st.sampled_from([0.0, 1.0]), min_size=1, max_size=60)


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(st.tuples(st.sampled_from([0.0, 1.0]), st.sampled_from([0.0, 1.0])), min_size=1, max_size=80))
def test_swapping_the_models_negates_the_drop_and_mirrors_the_interval(pairs: list[tuple[float, float]]) -> None:
    base = measurement({"a": [b for b, _ in pairs]})
    comp = measurement({"a": [c for _, c in pairs]})
    forward, backward = paired_drop(base, comp), paired_drop(comp, base)
    assert forward.drop_pp == pytest.approx(-backward.drop_pp, abs=1e-9)
    assert forward.ci_low_pp == pytest.approx(-backward.ci_high_pp, abs=1e-9)
    assert -100.0 <= forward.ci_low_pp <= forward.ci_high_pp <= 100.0


def test_swapped_models_mirror_the_interval_when_welch_df_rounds_below_an_integer() -> None:
    # Found by hypothesis: Welch's df for one task came out as 13.999... one way and 14 the other.
    base = measurement({"a": [0.0] * 7 + [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]})
    comp = measurement({"a": [0.0] * 7 + [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]})
    forward, backward = paired_drop(base, comp), paired_drop(comp, base)
    assert forward.ci_low_pp == pytest.approx(-backward.ci_high_pp, abs=1e-9)
    assert forward.ci_high_pp == pytest.approx(-backward.ci_low_pp, abs=1e-9)
