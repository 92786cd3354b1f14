"""Decisions on the accuracy constraint with stated error rates: group-sequential looks.

A trial's documents are evaluated in chunks and the paired drop is looked at after each
chunk (:mod:`objectives.paired`). Looking repeatedly at a fixed-sample 95 % interval and
stopping the first time it clears τ stops far more often than 5 % of the time; this
module corrects for the looks actually made.

The correction: *repeated confidence intervals* (Jennison & Turnbull, 2000, ch. 9) from
an α-spending function. With α = 1 − confidence split evenly over the two sides, each
side spends Lan & DeMets' O'Brien–Fleming-like function

    α_side(t) = 2 − 2 Φ(z_{1 − α_side / 2} / √t),   t = documents so far / documents planned,

so the first looks, on few documents, spend almost nothing and the last look's interval is
barely wider than a fixed-sample one. Look k's critical value c_k solves
P(Z_1 < c_1, …, Z_{k−1} < c_{k−1}, Z_k ≥ c_k) = α_side(t_k) − α_side(t_{k−1}) for the
canonical joint distribution of the look statistics (corr(Z_i, Z_j) = √(t_i / t_j)),
evaluated with SciPy's multivariate normal CDF. Whatever the looks (the spending only
needs their information fractions), the probability that any look's interval misses the
true drop on a side is at most α_side, so:

- an early stop (the interval's lower bound above τ) of a γ whose true drop is below τ
  happens with probability ≤ α_side ≤ 1 − confidence;
- a ``confident`` or ``adaptive`` "feasible" (upper bound below τ) of a γ whose true drop
  is τ or more happens with probability ≤ α_side.

The critical values are on the z scale; :func:`objectives.paired.paired_drop` turns each
into the t quantile of the same tail probability at the estimate's degrees of freedom.

Feasibility modes (Def. 1 of the paper is a drop below τ):

- ``point``: feasible when the point estimate of the drop is below τ (the paper's rule,
  the default for reproducing it); the interval is still reported.
- ``confident``: feasible when the interval's upper bound is below τ.
- ``adaptive``: like ``confident``, but when the interval straddles τ after ``limit``
  documents per task, more documents are evaluated (up to ``max_limit``) until it is
  decided or the documents run out; undecided then counts as infeasible.

Every decision says how many documents decided it and why (:class:`Decision`).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from objectives.accuracy import AccuracyMeasurement
    from objectives.paired import Aggregate, DropEstimate

__all__ = [
    "FEASIBILITY_MODES",
    "Decision",
    "FeasibilityMode",
    "SequentialDecider",
    "obf_boundaries",
    "obf_spending",
    "prefix",
    "replay",
]

FeasibilityMode = Literal["point", "confident", "adaptive"]
FEASIBILITY_MODES: tuple[str, ...] = ("point", "confident", "adaptive")
_NORMAL = NormalDist()
# Grid points of the recursive integration (spacing ~0.015 standard deviations).
_GRID = 1201


def obf_spending(t: float, alpha: float) -> float:
    """Lan–DeMets O'Brien–Fleming-like α spent by information fraction ``t`` (one side)."""
    if t <= 0.0:
        return 0.0
    t = min(t, 1.0)
    return 2.0 - 2.0 * _NORMAL.cdf(_NORMAL.inv_cdf(1.0 - alpha / 2.0) / math.sqrt(t))


def obf_boundaries(fractions: tuple[float, ...], alpha: float) -> tuple[float, ...]:
    """Critical values (z scale) of looks at increasing information ``fractions``, one side ``alpha``.

    Computed by the recursive numerical integration of Armitage, McPherson & Rowe (1969)
    (Jennison & Turnbull, ch. 19): the sub-density of the score S_k = √t_k Z_k over the
    region not yet crossed is carried on a grid from look to look, and each c_k is found
    with SciPy's ``brentq`` so that the probability of first crossing at look k equals the
    α spent there. Deterministic, and exact to ~1e-6 in the critical value. Each look's
    state is cached, so a sequence of looks costs one integration step per look.

    Raises:
        InvalidConfigError: fractions not strictly increasing in (0, 1], or alpha not in (0, 0.5).
    """
    if not 0.0 < alpha < 0.5:
        raise InvalidConfigError(f"one-sided alpha must be in (0, 0.5), got {alpha}")
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions) or any(
        b <= a for a, b in itertools.pairwise(fractions)
    ):
        raise InvalidConfigError(f"look fractions must increase strictly within (0, 1], got {list(fractions)}")
    return _look_state(tuple(fractions), alpha).bounds


@dataclass(frozen=True)
class _State:
    bounds: tuple[float, ...]
    grid: Any  # numpy arrays: the score grid below the last bound, and the sub-density on it
    density: Any


@functools.lru_cache(maxsize=4096)
def _look_state(fractions: tuple[float, ...], alpha: float) -> _State:
    import numpy as np
    from scipy.optimize import brentq
    from scipy.stats import norm

    t = fractions[-1]
    spent = obf_spending(fractions[-2], alpha) if len(fractions) > 1 else 0.0
    increment = obf_spending(t, alpha) - spent
    if len(fractions) == 1:  # S_1 ~ N(0, t_1)
        c = 40.0 if increment <= 1e-300 else float(norm.isf(increment))
        grid = np.linspace(-10.0 * math.sqrt(t), min(c, 10.0) * math.sqrt(t), _GRID)
        return _State(bounds=(c,), grid=grid, density=norm.pdf(grid, scale=math.sqrt(t)))
    before = _look_state(fractions[:-1], alpha)
    sd = math.sqrt(t - fractions[-2])
    step = before.grid[1] - before.grid[0]
    weights = np.full(_GRID, step)
    weights[0] = weights[-1] = step / 2.0  # trapezoid rule
    mass = before.density * weights

    def crossing(c: float) -> float:
        return float(np.sum(mass * norm.sf((c * math.sqrt(t) - before.grid) / sd)))

    if increment <= 0.0 or crossing(40.0) >= increment:
        c = 40.0
    else:
        c = float(brentq(lambda x: crossing(x) - increment, -10.0, 40.0, xtol=1e-7))
    grid = np.linspace(-10.0 * math.sqrt(t), min(c, 10.0) * math.sqrt(t), _GRID)
    kernel = norm.pdf((grid[:, None] - before.grid[None, :]) / sd) / sd
    return _State(bounds=(*before.bounds, c), grid=grid, density=kernel @ mass)


class Decision(BaseModel):
    """How the accuracy constraint was decided: verdict, documents used, why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: FeasibilityMode
    tau: float
    confidence: float
    feasible: bool
    decided: bool  # False: the documents ran out with the interval straddling τ (adaptive)
    stopped_early: bool  # infeasible before the planned documents were all evaluated
    docs: int  # documents (all tasks together) that decided it
    looks: int
    drop_pp: float
    ci_low_pp: float  # the decision interval: repeated-look corrected
    ci_high_pp: float
    reason: str

    @property
    def statistic(self) -> float:
        """What is compared with τ: the point drop (``point``) or the upper bound."""
        return self.drop_pp if self.mode == "point" else self.ci_high_pp


class SequentialDecider:
    """Looks at a growing paired comparison and says when, and how, it is decided.

    Args:
        tau: the tolerance (pp); feasible means a drop below it.
        confidence: two-sided; each side's error is at most (1 − confidence) / 2.
        mode: ``point``, ``confident`` or ``adaptive``.
        planned_docs: documents (all tasks) of a complete measurement: the information
            fractions are documents so far / this.
        min_docs: in ``adaptive`` mode, documents (all tasks) before "feasible" may be
            declared (``limit`` per task); ignored otherwise.
        early_stop: stop a hopeless γ at a look before the last (chunked evaluation).
    """

    def __init__(self, *, tau: float, confidence: float, mode: FeasibilityMode, planned_docs: int,
                 min_docs: int | None = None, early_stop: bool = True) -> None:
        if mode not in FEASIBILITY_MODES:
            raise InvalidConfigError(f"unknown feasibility mode {mode!r}; allowed: {', '.join(FEASIBILITY_MODES)}")
        if not 0.5 < confidence < 1.0:
            raise InvalidConfigError(f"confidence must be in (0.5, 1), got {confidence}")
        if planned_docs < 1:
            raise InvalidConfigError(f"planned_docs must be at least 1, got {planned_docs}")
        self.tau, self.confidence, self.mode = float(tau), confidence, mode
        self.alpha_side = (1.0 - confidence) / 2.0
        self.planned_docs = planned_docs
        self.min_docs = planned_docs if min_docs is None else min(min_docs, planned_docs)
        self.early_stop = early_stop
        self.fractions: list[float] = []

    def critical(self, docs: int) -> float:
        """Record a look at ``docs`` documents; its critical value given the looks before."""
        fraction = min(docs / self.planned_docs, 1.0)
        if self.fractions and fraction <= self.fractions[-1]:
            before = self.fractions[-1] * self.planned_docs
            raise InvalidConfigError(f"looks must add documents: {docs} after {before:.0f}")
        self.fractions.append(fraction)
        return obf_boundaries(tuple(self.fractions), self.alpha_side)[-1]

    def look(self, estimate: Callable[[float], DropEstimate], docs: int, *, final: bool) -> Decision | None:
        """One look: ``estimate(critical)`` is the drop with that look's interval.

        Returns the decision, or None to evaluate more documents. ``final``: no more
        documents will come (planned documents done, or none left).
        """
        c = self.critical(docs)
        est = estimate(c)
        looks = len(self.fractions)
        where = f"after {docs} documents (look {looks}, O'Brien–Fleming-corrected {self.confidence:.0%} interval)"
        interval = f"[{est.ci_low_pp:.2f}, {est.ci_high_pp:.2f}] pp"

        def decision(feasible: bool, reason: str, *, decided: bool = True, early: bool = False) -> Decision:
            return Decision(mode=self.mode, tau=self.tau, confidence=self.confidence, feasible=feasible,
                            decided=decided, stopped_early=early, docs=docs, looks=looks, drop_pp=est.drop_pp,
                            ci_low_pp=est.ci_low_pp, ci_high_pp=est.ci_high_pp, reason=reason)

        if est.ci_low_pp > self.tau and (final or self.early_stop):
            return decision(False, f"drop above τ={self.tau:g} pp: interval {interval} {where}", early=not final)
        if self.mode == "adaptive" and docs >= self.min_docs and est.ci_high_pp < self.tau:
            return decision(True, f"drop below τ={self.tau:g} pp: interval {interval} {where}")
        if not final:
            return None
        if self.mode == "point":
            feasible = est.drop_pp < self.tau
            side = "below" if feasible else "not below"
            return decision(feasible, f"point estimate {est.drop_pp:.2f} pp {side} τ={self.tau:g} (Def. 1, "
                                      f"interval {interval}) {where}")
        if est.ci_high_pp < self.tau:
            return decision(True, f"drop below τ={self.tau:g} pp: interval {interval} {where}")
        ran_out = "documents ran out with" if self.mode == "adaptive" else "undecided:"
        return decision(False, f"{ran_out} interval {interval} straddling τ={self.tau:g} pp {where}; "
                               "counted infeasible", decided=False)


def prefix(measurement: AccuracyMeasurement, docs_per_task: int) -> AccuracyMeasurement:
    """The measurement as it stood after ``docs_per_task`` documents of every task."""
    per_task = {}
    for name, task in measurement.per_task.items():
        kept = task.per_doc[:docs_per_task]
        per_task[name] = task.model_copy(update={
            "per_doc": kept, "n_docs": len(kept), "accuracy": sum(kept) / len(kept) if kept else 0.0,
        })
    accuracies = [t.accuracy for t in per_task.values()]
    return measurement.model_copy(update={
        "per_task": per_task, "accuracy": sum(accuracies) / len(accuracies),
        "complete": all(t.n_docs == t.n_planned for t in per_task.values()),
        "n_docs_total": sum(t.n_docs for t in per_task.values()),
    })


def look_points(n_planned: dict[str, int], chunk_size: int | None) -> list[int]:
    """Documents per task at each look: every ``chunk_size`` (or one look at the end)."""
    longest = max(n_planned.values())
    step = chunk_size or longest
    return [*range(step, longest, step), longest]


def replay(baseline: AccuracyMeasurement, measured: AccuracyMeasurement, decider: SequentialDecider, *,
           chunk_size: int | None, aggregate: Aggregate) -> tuple[Decision, AccuracyMeasurement] | None:
    """Re-derive a decision from stored per-document results, as a fresh run would make it.

    The looks are the current chunking's; the first look that decides ends the replay and
    the measurement is cut there. None when the stored documents end before a decision
    (the γ must be measured further).
    """
    from objectives.paired import paired_drop

    planned = {name: task.n_planned for name, task in baseline.per_task.items()}
    stored = {name: len(task.per_doc) for name, task in measured.per_task.items()}
    for per_task in look_points(planned, chunk_size):
        if any(min(per_task, planned[t]) > stored.get(t, 0) for t in planned):
            return None
        partial = prefix(measured, per_task)
        final = partial.complete

        def estimate(c: float, p: AccuracyMeasurement = partial) -> DropEstimate:
            return paired_drop(baseline, p, aggregate=aggregate, confidence=decider.confidence, critical=c)

        decision = decider.look(estimate, partial.n_docs_total, final=final)
        if decision is not None:
            return decision, partial
    return None
