"""Feasibility of stored trials under the study's *current* τ, mode and documents.

A trial records the measurement and the decision made when it ran. After ``--force``
changes τ or the feasibility mode, queries (``best``, ``pareto``, plots, counts) judge
every stored trial again from its recorded drop and decision interval, so the answer
never rests on a constraint value stored under an old definition. A trial measured on
other documents or at another confidence cannot be judged from its record: it is not
feasible, and ``decided_by`` says why (a resume measures its γ again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dse.study.goals import CONSTRAINT_EPSILON

__all__ = ["Rule", "constraint_for", "judge_row", "statistic"]


def statistic(record: dict[str, Any], mode: str) -> float:
    """What Def. 1 compares with τ under ``mode``: the point drop, or the decision interval's upper bound."""
    if mode == "point":
        return float(record["accuracy_drop_pp"])
    interval = record.get("decision_ci_pp")
    if interval:
        return float(interval[1])
    high = record.get("drop_ci_high_pp")
    return float(high if high is not None else record["accuracy_drop_pp"])


def constraint_for(record: dict[str, Any], tau: float, mode: str) -> float:
    """Optuna's constraint (≤ 0 feasible) of a trial record under τ and the feasibility mode.

    An early-stopped trial is infeasible whatever its point estimate: its corrected
    interval lay above τ.
    """
    value = statistic(record, mode) - float(tau) + CONSTRAINT_EPSILON
    if record.get("early_stopped"):
        return max(value, CONSTRAINT_EPSILON)
    return value


@dataclass(frozen=True)
class Rule:
    """The study's current decision rule, against which stored trials are judged."""

    tau: float
    mode: str
    confidence: float
    accuracy_key: str | None = None


def judge_row(row: dict[str, Any], rule: Rule) -> None:
    """Set ``feasible``, ``feasible_confident`` and (when changed) ``decided_by`` of a measured row."""
    if row["state"] != "COMPLETE" or row["rejected"] or row.get("accuracy_drop_pp") is None:
        row["feasible"] = False
        row["feasible_confident"] = False
        return
    stale = None
    if rule.accuracy_key and row.get("accuracy_key") and row["accuracy_key"] != rule.accuracy_key:
        stale = "measured on other documents than the study's current ones"
    elif row.get("decision_confidence") not in (None, rule.confidence):
        stale = f"decided at confidence {row['decision_confidence']}, the study now asks {rule.confidence}"
    if stale is not None:
        row["feasible"] = row["feasible_confident"] = False
        row["decided_by"] = f"not comparable: {stale}; resume to measure it again"
        return
    upper = statistic(row, "confident")
    row["feasible"] = constraint_for(row, rule.tau, rule.mode) <= 0.0
    row["feasible_confident"] = not row.get("early_stopped") and upper < rule.tau
    changed_tau = row.get("tau") is not None and float(row["tau"]) != rule.tau
    if changed_tau or row.get("feasibility") not in (None, rule.mode):
        verdict = "feasible" if row["feasible"] else "not feasible"
        basis = f"drop {row['accuracy_drop_pp']:.2f} pp" if rule.mode == "point" else f"upper bound {upper:.2f} pp"
        row["decided_by"] = (f"re-judged under τ={rule.tau:g} ({rule.mode}): {basis} → {verdict} "
                             f"(recorded: {row.get('decided_by') or 'τ=' + str(row.get('tau'))})")
