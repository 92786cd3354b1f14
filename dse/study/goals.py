"""What a study optimizes: one or two objectives read off a trial's record, and τ.

Def. 1 of the paper: minimize latency × energy (the EDP, as a ratio to the original
model) subject to an accuracy drop below τ percentage points. The constraint is handed
to Optuna with :meth:`optuna.trial.Trial.set_constraint`, where a value ≤ 0 is feasible.
The paper's condition is strict (drop < τ), so the value is ``drop − τ + ε`` with a tiny
``ε``: a drop of exactly τ is infeasible, as Def. 1 says.

A trial stopped early (its drop is above τ with high confidence) has no latency or
energy. Optuna still needs objective values for a COMPLETE trial, so a *stand-in* is
recorded: the ratio the paper's measurements predict from the parameter reduction (each
1% of parameter reduction gave about 0.5% less latency and 0.5% less energy). The
trial is infeasible anyway, so constrained samplers rank it by its constraint value
first; the stand-in only keeps a GP's regression close to plausible values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from space.registry import Registry

__all__ = [
    "Goal",
    "GOALS",
    "CONSTRAINT_KEY",
    "CONSTRAINT_EPSILON",
    "REJECTED_CONSTRAINT",
    "PAPER_LATENCY_SLOPE",
    "PAPER_ENERGY_SLOPE",
    "constraint_value",
    "standin_ratios",
    "METRIC_DIRECTIONS",
]

CONSTRAINT_KEY = "accuracy_drop"
# drop == τ must be infeasible (Def. 1 is strict); 1e-9 pp is far below any measurable drop.
CONSTRAINT_EPSILON = 1e-9
# A γ the rules exclude is told as infeasible with the worst possible constraint value
# (a drop of 100 pp is the most a real trial can have), so samplers learn to avoid it.
REJECTED_CONSTRAINT = 100.0
# Paper, Section IV: ~0.5% latency and ~0.5% energy saved per 1% of parameter reduction.
PAPER_LATENCY_SLOPE = 0.005
PAPER_ENERGY_SLOPE = 0.005

# Direction of every metric a query or plot may use: "min" is better lower.
METRIC_DIRECTIONS: dict[str, Literal["min", "max"]] = {
    "accuracy_drop_pp": "min",
    "accuracy": "max",
    "edp_ratio": "min",
    "latency_ratio": "min",
    "energy_ratio": "min",
    "memory_ratio": "min",
    "latency_s": "min",
    "energy_j": "min",
    "memory_bytes": "min",
    "params": "min",
    "param_reduction_pct": "max",
    "drop_ci_high_pp": "min",
    "evaluate_seconds": "min",
}


@dataclass(frozen=True)
class Goal:
    """One optimization mode: the metrics (with directions) a trial is scored on."""

    name: str
    metrics: tuple[str, ...]
    directions: tuple[Literal["minimize", "maximize"], ...]
    description: str
    needs: tuple[str, ...] = ()  # evaluation flags that must be on

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1

    def values(self, record: dict[str, Any]) -> tuple[list[float], dict[str, str]]:
        """Objective values of a trial record, and the stand-ins used (metric -> why).

        ``record`` is a TrialRecord as a dict. Missing latency/energy ratios (a trial
        stopped early) are replaced by the paper-slope estimate, and say so.
        """
        estimates = standin_ratios(float(record.get("param_reduction_pct") or 0.0))
        values: list[float] = []
        standins: dict[str, str] = {}
        for metric in self.metrics:
            value = record.get(metric)
            if value is None:
                if metric not in estimates:
                    raise ValueError(f"trial record has no {metric} and no stand-in exists for it")
                value = estimates[metric]
                why = "stopped early" if record.get("early_stopped") else "not measured"
                standins[metric] = (
                    f"{why}: estimated {value:.4f} from the parameter reduction with the paper's slopes "
                    f"(0.5% latency and 0.5% energy per 1% of parameters)"
                )
            values.append(float(value))
        return values, standins


def standin_ratios(param_reduction_pct: float) -> dict[str, float]:
    """Latency, energy and EDP ratios the paper's slopes predict for a parameter reduction."""
    latency = max(1.0 - PAPER_LATENCY_SLOPE * param_reduction_pct, 0.0)
    energy = max(1.0 - PAPER_ENERGY_SLOPE * param_reduction_pct, 0.0)
    return {"latency_ratio": latency, "energy_ratio": energy, "edp_ratio": latency * energy}


def constraint_value(accuracy_drop_pp: float, tau: float) -> float:
    """Optuna's constraint: feasible (≤ 0) exactly when ``drop < τ``."""
    return float(accuracy_drop_pp) - float(tau) + CONSTRAINT_EPSILON


GOALS: Registry[Goal] = Registry("objective")
for _goal in (
    Goal("edp", ("edp_ratio",), ("minimize",),
         "latency × energy relative to the original model (the paper's Def. 1)",
         needs=("measure_latency", "measure_energy")),
    Goal("latency", ("latency_ratio",), ("minimize",), "latency relative to the original model",
         needs=("measure_latency",)),
    Goal("energy", ("energy_ratio",), ("minimize",), "energy relative to the original model",
         needs=("measure_energy",)),
    Goal("params", ("param_reduction_pct",), ("maximize",), "parameter reduction in % of the model"),
    Goal("edp-drop", ("edp_ratio", "accuracy_drop_pp"), ("minimize", "minimize"),
         "Pareto front of EDP ratio and accuracy drop", needs=("measure_latency", "measure_energy")),
    Goal("reduction-drop", ("param_reduction_pct", "accuracy_drop_pp"), ("maximize", "minimize"),
         "Pareto front of parameter reduction and accuracy drop"),
    # How compression papers report: a γ below the budget is rejected before it is measured
    # (its parameter count is known from the spec), so every measured γ meets it.
    Goal("budget", ("accuracy_drop_pp",), ("minimize",),
         "least accuracy drop among γ with at least min_param_reduction_pct % fewer parameters"),
):
    GOALS.register(_goal.name, _goal)
