"""What a trial measures: accuracy (lm-eval), perplexity, latency, energy, memory.

Depends on ``space`` at most, never on ``dse``.
"""

from objectives.base import EvalTarget, Measurement, Objective
from objectives.energy import EnergyMeasurement, EnergyObjective, edp, edp_ratio, energy_ratio
from objectives.latency import LatencyMeasurement, LatencyObjective, latency_ratio, time_callable
from objectives.memory import MemoryMeasurement, MemoryObjective
from objectives.workload import Workload, run_workload

__all__ = [
    "EvalTarget",
    "Measurement",
    "Objective",
    "EnergyMeasurement",
    "EnergyObjective",
    "LatencyMeasurement",
    "LatencyObjective",
    "MemoryMeasurement",
    "MemoryObjective",
    "Workload",
    "edp",
    "edp_ratio",
    "energy_ratio",
    "latency_ratio",
    "run_workload",
    "time_callable",
]
