"""Accuracy drop of a compressed model against its baseline, paired on the same documents.

Both measurements evaluate the same fixed documents in the same order (see
:mod:`objectives.accuracy`), so the drop is estimated from the per-document
differences d_i = baseline_i - compressed_i. The two models agree on most documents,
so the differences vary far less than either accuracy does: on 100 ARC-Easy documents
an accuracy near 0.5 has a standard error of 5 pp on its own, while the paired
difference's standard error is set by the few documents where the models disagree.

A run stopped early covers a prefix of the documents; it is compared with the
baseline on that prefix.

Notes:
    Interval, per task: the paired t interval on the differences, after adding two
    pseudo-documents with differences +1 and -1. For 0/1 results this is Bonett & Price's
    (2012) adjusted Wald interval for paired proportions (one pseudo-count in each
    discordant cell), with a t instead of a normal quantile. It keeps the interval from
    collapsing to a point when the first few documents all agree (or all disagree),
    which would otherwise stop a trial after a handful of documents. The point estimate
    ``drop_pp`` is the plain mean difference; the interval is centred on the adjusted
    mean, which is slightly closer to 0. Intervals are clipped to [-100, 100] pp.

    Aggregates over tasks: ``mean`` (each task counts once, like the measurement's
    ``accuracy``) and ``weighted`` (tasks weighted by their planned number of documents)
    combine the tasks' estimates as independent, with a Welch-Satterthwaite degrees of
    freedom. ``max`` is the largest task drop; its interval is the largest lower and
    largest upper bound of the tasks' intervals, so ``ci_low_pp > tau`` still means
    "some task's drop is above tau" at the stated confidence.
"""

from __future__ import annotations

import functools
import math
from statistics import NormalDist
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from objectives.accuracy import AccuracyMeasurement

__all__ = [
    "Aggregate",
    "DropEstimate",
    "PairedStats",
    "TaskDrop",
    "certainly_above",
    "certainly_below",
    "paired_drop",
    "paired_stats",
    "t_quantile",
]

Aggregate = Literal["mean", "max", "weighted"]
AGGREGATES: tuple[str, ...] = ("mean", "max", "weighted")
_PP = 100.0
# Above this many degrees of freedom the Cornish-Fisher expansion is exact to ~1e-9.
_EXACT_T_MAX_DF = 200


class TaskDrop(BaseModel):
    """One task's paired drop (percentage points; positive when accuracy fell)."""

    model_config = ConfigDict(extra="forbid")

    task: str
    drop_pp: float
    ci_low_pp: float
    ci_high_pp: float
    n_docs: int
    baseline_accuracy: float  # on the compared documents
    accuracy: float  # on the compared documents


class DropEstimate(BaseModel):
    """The aggregated drop with its confidence interval, and each task's."""

    model_config = ConfigDict(extra="forbid")

    drop_pp: float
    ci_low_pp: float
    ci_high_pp: float
    per_task: dict[str, TaskDrop]
    aggregate: Aggregate
    confidence: float
    n_docs: int
    complete: bool  # every planned document of every task was compared
    # z-scale critical value of a repeated (group-sequential) interval; None: fixed-sample.
    critical: float | None = None


def certainly_above(estimate: DropEstimate, tau: float) -> bool:
    """True when the drop is above ``tau`` pp at the estimate's confidence: the trial is hopeless."""
    return estimate.ci_low_pp > tau


def certainly_below(estimate: DropEstimate, tau: float) -> bool:
    """True when the drop is below ``tau`` pp at the estimate's confidence."""
    return estimate.ci_high_pp < tau


def paired_drop(
    baseline: AccuracyMeasurement,
    compressed: AccuracyMeasurement,
    *,
    aggregate: Aggregate = "mean",
    confidence: float = 0.95,
    critical: float | None = None,
) -> DropEstimate:
    """The accuracy drop (baseline - compressed) in percentage points, with a paired interval.

    Args:
        baseline: the undecomposed model's measurement (normally complete).
        compressed: the decomposed model's, possibly stopped early (a prefix).
        aggregate: ``mean`` over tasks, ``max`` over tasks, or ``weighted`` by the
            tasks' planned document counts.
        confidence: the two-sided confidence level of the intervals, in (0, 1).
        critical: a z-scale critical value that replaces ``confidence``'s, e.g. a
            group-sequential boundary (:mod:`objectives.sequential`); it is turned into a
            t quantile of the same tail probability at each estimate's degrees of freedom.

    Raises:
        InvalidConfigError: unknown aggregate, confidence outside (0, 1), or the two
            measurements are not on the same tasks and documents.
    """
    if aggregate not in AGGREGATES:
        raise InvalidConfigError(f"unknown aggregate {aggregate!r}; allowed: {', '.join(AGGREGATES)}")
    if not 0.0 < confidence < 1.0:
        raise InvalidConfigError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    if list(baseline.per_task) != list(compressed.per_task):
        raise InvalidConfigError(
            f"baseline and compressed measured different tasks: {list(baseline.per_task)} vs "
            f"{list(compressed.per_task)}"
        )

    stats: dict[str, PairedStats] = {}
    drops: dict[str, TaskDrop] = {}
    complete = True
    for name, base in baseline.per_task.items():
        comp = compressed.per_task[name]
        if base.metric != comp.metric or base.n_planned != comp.n_planned:
            raise InvalidConfigError(
                f"task {name!r} was measured on different documents or metrics: baseline "
                f"{base.n_planned} documents ({base.metric}), compressed {comp.n_planned} ({comp.metric}); "
                "measure both with the same tasks and limit"
            )
        n = min(len(base.per_doc), len(comp.per_doc))
        complete = complete and n == base.n_planned
        task_stats = paired_stats(base.per_doc[:n], comp.per_doc[:n], weight=float(base.n_planned))
        stats[name] = task_stats
        low, high = task_stats.interval(confidence, critical)
        drops[name] = TaskDrop(
            task=name,
            drop_pp=task_stats.mean * _PP,
            ci_low_pp=low,
            ci_high_pp=high,
            n_docs=n,
            baseline_accuracy=sum(base.per_doc[:n]) / n if n else 0.0,
            accuracy=sum(comp.per_doc[:n]) / n if n else 0.0,
        )

    if aggregate == "max":
        drop = max(d.drop_pp for d in drops.values())
        low = max(d.ci_low_pp for d in drops.values())
        high = max(d.ci_high_pp for d in drops.values())
    else:
        if aggregate == "mean":
            weights = {name: 1.0 / len(stats) for name in stats}
        else:
            total = sum(s.weight for s in stats.values())
            weights = {name: s.weight / total for name, s in stats.items()}
        combined = _combine(stats, weights)
        drop = combined.mean * _PP
        low, high = combined.interval(confidence, critical)
    return DropEstimate(
        drop_pp=drop,
        ci_low_pp=low,
        ci_high_pp=high,
        per_task=drops,
        aggregate=aggregate,
        confidence=confidence,
        n_docs=sum(d.n_docs for d in drops.values()),
        complete=complete,
        critical=critical,
    )


# --------------------------------------------------------------------------- statistics


class PairedStats:
    """A mean difference (accuracy units) with its adjusted centre, standard error and df."""

    def __init__(self, mean: float, centre: float, se: float, df: float, weight: float) -> None:
        self.mean = mean
        self.centre = centre
        self.se = se
        self.df = df
        self.weight = weight

    def interval(self, confidence: float, critical: float | None = None) -> tuple[float, float]:
        """The two-sided interval in percentage points, clipped to [-100, 100].

        ``critical`` (z scale) replaces the confidence's quantile by one of the same tail
        probability under Student's t.
        """
        p = 0.5 + confidence / 2.0 if critical is None else NormalDist().cdf(critical)
        if self.df < 1 or not math.isfinite(self.se) or p >= 1.0 - 1e-15:
            return -_PP, _PP
        half = t_quantile(p, self.df) * self.se
        return max(-_PP, (self.centre - half) * _PP), min(_PP, (self.centre + half) * _PP)


def paired_stats(base: list[float], comp: list[float], *, weight: float) -> PairedStats:
    """Mean difference with the Bonett–Price adjusted centre, standard error and df (see the module docstring)."""
    differences = [b - c for b, c in zip(base, comp, strict=True)]
    n = len(differences)
    mean = sum(differences) / n if n else 0.0
    adjusted = [*differences, 1.0, -1.0]  # Bonett-Price pseudo-documents
    m = len(adjusted)
    centre = sum(adjusted) / m
    variance = sum((x - centre) ** 2 for x in adjusted) / (m - 1)
    return PairedStats(mean=mean, centre=centre, se=math.sqrt(variance / m), df=float(m - 1), weight=weight)


def _combine(stats: dict[str, PairedStats], weights: dict[str, float]) -> PairedStats:
    """A weighted sum of independent estimates; Welch-Satterthwaite degrees of freedom."""
    mean = sum(weights[k] * s.mean for k, s in stats.items())
    centre = sum(weights[k] * s.centre for k, s in stats.items())
    variances = {k: (weights[k] * s.se) ** 2 for k, s in stats.items()}
    total = sum(variances.values())
    denominator = sum(v**2 / stats[k].df for k, v in variances.items() if v > 0)
    df = total**2 / denominator if denominator > 0 else min(s.df for s in stats.values())
    return PairedStats(mean=mean, centre=centre, se=math.sqrt(total), df=df, weight=1.0)


@functools.lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile (p in (0.5, 1)) of Student's t with ``df`` degrees of freedom.

    Exact for df up to 200 (bisection on the closed-form CDF for integer df, with
    non-integer df rounded down, which widens the interval slightly); above that the
    Cornish-Fisher expansion, whose error there is below 1e-9.
    """
    if not 0.5 <= p < 1.0:
        raise ValueError(f"p must be in [0.5, 1), got {p}")
    if df < 1:
        raise ValueError(f"df must be at least 1, got {df}")
    if p == 0.5:
        return 0.0
    if df > _EXACT_T_MAX_DF:
        return _cornish_fisher(p, df)
    # Welch-Satterthwaite df of one task is that task's df up to rounding (13.999999...):
    # snap to the integer before rounding down, or swapping the models would change the interval.
    nu = math.floor(df + 1e-9)
    target = 2.0 * p - 1.0  # P(|T| <= t)
    low, high = 0.0, 1.0
    while _t_central_mass(high, nu) < target:
        high *= 2.0
    for _ in range(200):
        mid = (low + high) / 2.0
        if _t_central_mass(mid, nu) < target:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2.0


def _t_central_mass(t: float, nu: int) -> float:
    """P(|T| <= t) for integer ``nu`` (Abramowitz & Stegun 26.7.3 and 26.7.4)."""
    theta = math.atan(t / math.sqrt(nu))
    c2 = math.cos(theta) ** 2
    s = math.sin(theta)
    if nu % 2 == 0:
        term, total = 1.0, 1.0
        for k in range(2, nu, 2):  # 1 + (1/2)c2 + (1·3)/(2·4)c2² + ...
            term *= (k - 1) / k * c2
            total += term
        return s * total
    if nu == 1:
        return 2.0 * theta / math.pi
    term, total = 1.0, 1.0
    for k in range(3, nu, 2):  # 1 + (2/3)c2 + (2·4)/(3·5)c2² + ...
        term *= (k - 1) / k * c2
        total += term
    return 2.0 / math.pi * (theta + s * math.cos(theta) * total)


def _cornish_fisher(p: float, df: float) -> float:
    """Student's t quantile from the normal one (Abramowitz & Stegun 26.7.5)."""
    z = NormalDist().inv_cdf(p)
    g1 = (z**3 + z) / 4.0
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96.0
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384.0
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160.0
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4
