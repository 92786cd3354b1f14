"""What a trial measures: accuracy (lm-eval), perplexity, latency, energy, memory.

Depends on ``space`` at most, never on ``dse``.
"""

from objectives.accuracy import AccuracyMeasurement, AccuracyObjective, TaskAccuracy, lm_eval_version
from objectives.base import EvalTarget, Measurement, Objective
from objectives.energy import EnergyMeasurement, EnergyObjective, edp, edp_ratio, energy_ratio
from objectives.latency import LatencyMeasurement, LatencyObjective, latency_ratio, time_callable
from objectives.memory import MemoryMeasurement, MemoryObjective
from objectives.paired import DropEstimate, TaskDrop, certainly_above, certainly_below, paired_drop
from objectives.perplexity import PerplexityMeasurement, PerplexityObjective
from objectives.workload import Workload, run_workload

__all__ = [
    "AccuracyMeasurement",
    "AccuracyObjective",
    "TaskAccuracy",
    "lm_eval_version",
    "DropEstimate",
    "TaskDrop",
    "certainly_above",
    "certainly_below",
    "paired_drop",
    "PerplexityMeasurement",
    "PerplexityObjective",
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
