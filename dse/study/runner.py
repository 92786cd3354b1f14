"""A study run, step by step; the pieces live in modules with one job each.

- :mod:`dse.study.lifecycle`: check the definition, create or open the study (idempotent
  across processes), measure or reuse the baseline.
- :mod:`dse.study.claims` and :mod:`dse.study.reaper`: the trial budget shared by every
  process, and recovery of trials whose worker died (Optuna's heartbeat).
- :mod:`dse.study.worker`: one worker's loop (claim → ask → check → measure → tell).
- :mod:`dse.study.processes`: local worker processes tied to their parent.
- :mod:`dse.study.progress`: the progress bar.

This module keeps the names other code imports from it.
"""

from __future__ import annotations

from dse.study.lifecycle import (
    BASELINE_ATTR,
    DEFINITION_ATTR,
    HISTORY_ATTR,
    SEEDS_ATTR,
    EvaluatorFactory,
    Prepared,
    calibration_key,
    check_definition,
    default_evaluator_factory,
    ensure_baseline,
    measurement_settings,
    open_existing,
    prepare,
    search_space_for,
    study_names,
)
from dse.study.processes import run_workers
from dse.study.worker import MAX_REJECTIONS_IN_A_ROW, Worker, WorkerStats

__all__ = [
    "DEFINITION_ATTR",
    "BASELINE_ATTR",
    "SEEDS_ATTR",
    "HISTORY_ATTR",
    "EvaluatorFactory",
    "default_evaluator_factory",
    "measurement_settings",
    "calibration_key",
    "search_space_for",
    "check_definition",
    "Prepared",
    "prepare",
    "open_existing",
    "study_names",
    "ensure_baseline",
    "WorkerStats",
    "Worker",
    "run_workers",
    "MAX_REJECTIONS_IN_A_ROW",
]
