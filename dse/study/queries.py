"""Questions asked of a stored study: its trials as rows, the best feasible γ, Pareto fronts, exports.

A *row* is one trial as a plain dict (the JSON contract of ``dse study export``): at
least ``number``, ``state``, ``feasible``, ``memoized``, ``gamma`` (layers, tensors,
rank), ``accuracy_drop_pp``, ``edp_ratio``, ``latency_ratio``, ``energy_ratio`` and
``param_reduction_pct``. *Feasible* is Optuna's notion: a COMPLETE trial whose
accuracy-drop constraint is ≤ 0 (drop < τ). Rejected γ (excluded by a rule, never
measured) are COMPLETE in Optuna's eyes but never feasible and never on a front.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dse.study.feasibility import Rule, judge_row
from dse.study.goals import CONSTRAINT_KEY, METRIC_DIRECTIONS, Goal
from space.errors import InvalidConfigError, UnknownNameError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ROW_KEYS",
    "trial_row",
    "trial_rows",
    "best_row",
    "pareto_rows",
    "dominates",
    "counts",
    "export_text",
    "check_metrics",
]

# Keys of every row, in export order (per_task, gamma and the lists are kept as objects).
ROW_KEYS: tuple[str, ...] = (
    "number", "state", "feasible", "feasible_confident", "memoized", "rejected", "early_stopped", "paper_seed",
    "retry_of", "screened", "kl_divergence", "screen_reason",
    "gamma", "gamma_hash", "gamma_label",
    "accuracy", "baseline_accuracy", "accuracy_drop_pp", "drop_ci_low_pp", "drop_ci_high_pp",
    "tau", "feasibility", "decided_by", "decision_docs", "decision_ci_pp", "decision_confidence", "accuracy_key",
    "edp_ratio", "edp_ratio_ci", "edp_method", "latency_ratio", "latency_ratio_ci", "latency_method",
    "energy_ratio", "energy_ratio_ci",
    "memory_ratio", "repeats", "noisy", "noise", "threads", "hardware",
    "latency_s", "energy_j", "energy_method", "energy_estimated", "memory_bytes",
    "params", "params_before", "param_reduction_pct",
    "per_task", "values", "constraint", "standins", "stop_reason", "reject_reason", "fail_reason",
    "decompose_seconds", "evaluate_seconds", "trial_seconds", "cache_hits", "cache_misses",
    "memo_study", "versions", "datetime_start", "datetime_complete",
)


def trial_row(trial: optuna.trial.FrozenTrial, rule: Rule | None = None) -> dict[str, Any]:
    """One trial as a row (see the module docstring); ``rule`` re-judges its feasibility."""
    attrs = trial.user_attrs
    constraint = trial.constraints.get(CONSTRAINT_KEY)
    complete = trial.state.name == "COMPLETE"
    rejected = bool(attrs.get("rejected", False))
    screened = bool(attrs.get("screened", False))  # skipped by the KL screen (dse/screen.py): never feasible
    feasible = complete and not rejected and not screened and constraint is not None and constraint <= 0.0
    gamma = attrs.get("gamma")
    row: dict[str, Any] = {key: attrs.get(key) for key in ROW_KEYS}
    row.update(
        number=trial.number,
        state=trial.state.name,
        feasible=feasible,
        memoized=bool(attrs.get("memoized", False)),
        rejected=rejected,
        screened=screened,
        early_stopped=bool(attrs.get("early_stopped", False)),
        # Optuna's retry of a stale trial says so in its system attributes.
        retry_of=trial.system_attrs.get("failed_trial", attrs.get("retry_of")),
        gamma=dict(gamma) if isinstance(gamma, dict) else None,
        values=list(trial.values) if trial.values is not None else None,
        constraint=constraint,
        datetime_start=trial.datetime_start.isoformat() if trial.datetime_start else None,
        datetime_complete=trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    )
    if rule is not None:
        judge_row(row, rule)
    return row


def trial_rows(study: optuna.Study, *, include_rejected: bool = True, rule: Rule | None = None) -> list[dict[str, Any]]:
    """Every trial of ``study`` as a row, by number; ``rule``: judged under the current definition."""
    from dse.study.storage import retrying

    trials = retrying(lambda: study.get_trials(deepcopy=False))
    rows = [trial_row(t, rule) for t in trials]
    if not include_rejected:
        rows = [r for r in rows if not r["rejected"]]
    return sorted(rows, key=lambda r: r["number"])


def _measured(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] == "COMPLETE" and not r["rejected"] and not r["screened"]]


def best_row(rows: Sequence[dict[str, Any]], goal: Goal) -> dict[str, Any] | None:
    """The best feasible trial by the goal's first metric (ties: its second, then the lower number)."""
    candidates = [r for r in _measured(rows) if r["feasible"] and all(r.get(m) is not None for m in goal.metrics)]
    if not candidates:
        return None

    def key(row: dict[str, Any]) -> tuple[float, ...]:
        signs = [1.0 if d == "minimize" else -1.0 for d in goal.directions]
        return (*(s * float(row[m]) for s, m in zip(signs, goal.metrics, strict=True)), float(row["number"]))

    return min(candidates, key=key)


def check_metrics(metrics: Sequence[str]) -> list[str]:
    """Two or three distinct known metrics (what a Pareto front is drawn over)."""
    if not 2 <= len(metrics) <= 3:
        raise InvalidConfigError(f"a Pareto front needs two or three metrics, got {len(metrics)}: {list(metrics)}")
    if len(set(metrics)) != len(metrics):
        raise InvalidConfigError(f"a metric is given twice in {list(metrics)}")
    for metric in metrics:
        if metric not in METRIC_DIRECTIONS:
            import difflib

            close = difflib.get_close_matches(metric, list(METRIC_DIRECTIONS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown metric {metric!r}.{hint} Available: {', '.join(sorted(METRIC_DIRECTIONS))}"
            )
    return list(metrics)


def _oriented(row: dict[str, Any], metrics: Sequence[str]) -> tuple[float, ...]:
    # Every metric turned into "smaller is better".
    return tuple(float(row[m]) if METRIC_DIRECTIONS[m] == "min" else -float(row[m]) for m in metrics)


def dominates(a: dict[str, Any], b: dict[str, Any], metrics: Sequence[str]) -> bool:
    """``a`` is no worse than ``b`` in every metric and better in one."""
    va, vb = _oriented(a, metrics), _oriented(b, metrics)
    return all(x <= y for x, y in zip(va, vb, strict=True)) and any(x < y for x, y in zip(va, vb, strict=True))


def pareto_rows(rows: Sequence[dict[str, Any]], metrics: Sequence[str], *,
                feasible_only: bool = True) -> list[dict[str, Any]]:
    """The non-dominated trials over ``metrics``, sorted by the first metric.

    Only measured trials that recorded every metric take part (an early-stopped trial has
    no EDP), feasible ones unless ``feasible_only`` is False. A γ measured twice (a memo
    answer) appears once, as its first trial.
    """
    metrics = check_metrics(metrics)
    pool: dict[str, dict[str, Any]] = {}
    for row in _measured(rows):
        if feasible_only and not row["feasible"]:
            continue
        if any(row.get(m) is None for m in metrics):
            continue
        key = row.get("gamma_hash") or f"#{row['number']}"
        if key not in pool or row["number"] < pool[key]["number"]:
            pool[key] = row
    candidates = list(pool.values())
    front = [r for r in candidates if not any(dominates(o, r, metrics) for o in candidates if o is not r)]
    return sorted(front, key=lambda r: (_oriented(r, metrics), r["number"]))


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many trials are in each condition (what ``dse study show`` prints)."""
    measured = _measured(rows)
    return {
        "trials": len(rows),
        "complete": len(measured),
        "feasible": sum(1 for r in measured if r["feasible"]),
        # upper bound of the (look-corrected) interval below τ: feasible with the study's confidence
        "feasible_confident": sum(1 for r in measured if r.get("feasible_confident")),
        "infeasible": sum(1 for r in measured if not r["feasible"]),
        "early_stopped": sum(1 for r in measured if r["early_stopped"]),
        "memoized": sum(1 for r in measured if r["memoized"]),
        "rejected": sum(1 for r in rows if r["rejected"]),
        "screened": sum(1 for r in rows if r["screened"]),
        "failed": sum(1 for r in rows if r["state"] == "FAIL"),
        "running": sum(1 for r in rows if r["state"] == "RUNNING"),
        "waiting": sum(1 for r in rows if r["state"] == "WAITING"),
    }


def _cell(value: Any) -> Any:
    """A CSV cell: intervals and lists as JSON (``[low, high]``)."""
    return json.dumps(value) if isinstance(value, (list, dict)) else value


_CSV_SCALARS = tuple(k for k in ROW_KEYS if k not in ("gamma", "per_task", "values", "standins", "versions"))


def export_text(rows: Sequence[dict[str, Any]], fmt: str) -> str:
    """Rows as a JSON list, or as CSV with γ and per-task results flattened into columns."""
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str) + "\n"
    if fmt != "csv":
        raise InvalidConfigError(f"unknown export format {fmt!r}; allowed: csv, json")
    tasks = sorted({task for r in rows for task in (r.get("per_task") or {})})
    header = ["number", "state", "gamma_layers", "gamma_tensors", "gamma_rank"]
    header += [k for k in _CSV_SCALARS if k not in ("number", "state")]
    header += [f"{task}.{field}" for task in tasks for field in ("accuracy", "drop_pp")]
    header += ["values"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        gamma = row.get("gamma") or {}
        rank = gamma.get("rank")
        line: list[Any] = [
            row["number"], row["state"],
            " ".join(str(x) for x in gamma.get("layers", [])),
            " ".join(str(x) for x in gamma.get("tensors", [])),
            json.dumps(rank) if isinstance(rank, dict) else rank,
        ]
        line += [_cell(row.get(k)) for k in _CSV_SCALARS if k not in ("number", "state")]
        per_task = row.get("per_task") or {}
        for task in tasks:
            entry = per_task.get(task) or {}
            line += [entry.get("accuracy"), entry.get("drop_pp")]
        line.append(" ".join(str(v) for v in row["values"]) if row.get("values") else None)
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue()
