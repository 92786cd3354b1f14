"""Characterization: the paper's sweeps (Figs. 5–11) measured as studies of fixed γ.

Each sweep is a study in the same storage as searched studies: its configurations are
enqueued as trials of the ``full`` encoding with every rule off, and the study engine
runs them. So a sweep resumes after Ctrl-C or a kill (a lost trial is queued again),
shares measurements with every other study of the database through the memo (``all``
measures a γ common to two sweeps once), and can be queried, exported and plotted with
``dse study …`` like any study.

>>> import dse
>>> result = dse.characterize("smollm2-135m", "layers", tasks=["dse_arc_easy"], limit=100)  # doctest: +SKIP
>>> sorted(result["points"], key=lambda p: -p["accuracy_drop_pp"])[:2]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from dse.characterize_sweeps import SWEEP_NAMES, SWEEPS, SweepPoint, sweep_points
from dse.study.definition import StudyDefinition
from objectives.workload import Workload
from space.errors import InvalidConfigError
from space.spec import ModelSpec

__all__ = ["characterize", "sweep_definition", "SweepSettings", "DEFAULT_TASKS", "SWEEP_NAMES", "wilson_interval"]

DEFAULT_TASKS: tuple[str, ...] = ("dse_arc_easy", "dse_piqa", "dse_hellaswag")
# Ratio metrics a point reports, each with ``<metric>_ci`` where the record has one.
_RATIOS = ("latency_ratio", "energy_ratio", "edp_ratio", "memory_ratio")
_EXTRA = ("perplexity", "perplexity_ratio", "noisy", "repeats", "energy_method", "energy_estimated",
          "max_rel_error", "early_stopped")


def _rules_off() -> dict[str, bool | int]:
    from space.rules import rule_names

    return dict.fromkeys(rule_names(), False)


class SweepSettings(BaseModel):
    """What a sweep's points are measured with: the keywords of :func:`characterize` and :func:`sweep_definition`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tasks: tuple[str, ...] = DEFAULT_TASKS
    limit: int | None = None
    storage: str | None = None
    name: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    data_dir: str | None = None
    batch_size: int = 16
    efficiency: bool = True
    workload: Workload | None = None
    workers: int = 1


def sweep_definition(
    model: str,
    sweep: str,
    points: Sequence[SweepPoint],
    spec: ModelSpec,
    settings: SweepSettings | None = None,
    **fields: Any,
) -> StudyDefinition:
    """The study that measures one sweep: rules off, ``full`` encoding, no early stop.

    Its default name is ``char-<model>-<sweep>-<hash>``, the hash over what the points
    are measured with (tasks, limit, device, efficiency switches, workload), so the same
    sweep under other settings is another study while the memo still shares any γ
    measured alike. ``fields`` override single :class:`SweepSettings` fields.
    """
    base = (settings or SweepSettings()).model_dump()
    s = SweepSettings.model_validate(base | fields)
    tasks, limit, storage, name, workload = s.tasks, s.limit, s.storage, s.name, s.workload
    ranks = [p.gamma.rank for p in points if p.gamma.rank is not None]
    max_rank = max(ranks) if ranks else 1
    data: dict[str, Any] = {
        "model": model, "device": s.device, "dtype": s.dtype, "tau": 100.0, "objective": "params",
        "n_trials": max(1, len({p.gamma.hash(spec) for p in points})), "workers": s.workers,
        "rules": _rules_off(),
        "evaluation": {
            "tasks": list(tasks), "limit": limit, "batch_size": s.batch_size, "data_dir": s.data_dir,
            "measure_latency": s.efficiency, "measure_energy": s.efficiency, "measure_memory": s.efficiency,
        },
        "search": {"encoding": "full", "sampler": "random", "seed": 0, "paper_seeds": 0, "max_rank": max_rank},
    }
    if workload is not None:
        data["workload"] = workload.model_dump(mode="json")
    if storage is not None:
        data["storage"] = storage
    definition = StudyDefinition.model_validate(data)
    if name is None:
        what = json.dumps(definition.identity() | {"sweep": sweep}, sort_keys=True)
        digest = hashlib.sha256(what.encode()).hexdigest()[:8]
        stem = re.sub(r"[^A-Za-z0-9._-]", "-", Path(model).name or model).strip("-._") or "model"
        name = f"char-{stem}-{sweep}-{digest}"
    return definition.with_overrides(name=name)


def wilson_interval(accuracy: float, n: int, confidence: float = 0.95) -> list[float] | None:
    """Wilson score interval of a proportion measured on ``n`` documents (None for n = 0)."""
    from statistics import NormalDist

    if n <= 0:
        return None
    accuracy = min(1.0, max(0.0, accuracy))
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def _point_row(point: SweepPoint, sweep: str, spec: ModelSpec, row: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON object of one measured (or not yet measured) point."""
    from space.metrics import parameter_report

    gamma = point.gamma.canonical(spec)
    out: dict[str, Any] = {
        "sweep": sweep, "series": point.series, "x": point.x, "label": point.label,
        "layers": list(gamma["layers"]),
        "tensors": list(gamma["tensors"]),
        "rank": gamma["rank"],
        "param_reduction_pct": parameter_report(spec, point.gamma).param_reduction_pct,
        "measured": row is not None,
    }
    if row is None:
        return out
    out |= {
        "trial": row.get("number"),
        "accuracy": row.get("accuracy"),
        "baseline_accuracy": row.get("baseline_accuracy"),
        "accuracy_drop_pp": row.get("accuracy_drop_pp"),
        "drop_ci_pp": [row.get("drop_ci_low_pp"), row.get("drop_ci_high_pp")],
        "memoized": bool(row.get("memoized")),
    }
    per_task = {}
    for task, rec in (row.get("per_task") or {}).items():
        per_task[task] = {
            "accuracy": rec["accuracy"],
            "accuracy_ci": wilson_interval(rec["accuracy"], int(rec["n_docs"])),
            "baseline_accuracy": rec["baseline_accuracy"],
            "drop_pp": rec["drop_pp"],
            "drop_ci_pp": [rec.get("ci_low_pp"), rec.get("ci_high_pp")],
            "n_docs": rec["n_docs"],
        }
    out["per_task"] = per_task
    for metric in _RATIOS:
        out[metric] = row.get(metric)
        out[f"{metric}_ci"] = row.get(f"{metric}_ci")
    for key in _EXTRA:
        if row.get(key) is not None:
            out[key] = row[key]
    return out


def _run_one(sweep: str, spec: ModelSpec, model: str, *, progress: bool, evaluator_factory: Any,
             settings: SweepSettings, measure: bool) -> dict[str, Any]:
    from dse.characterize_runs import run_fixed_points, stored_points

    points = sweep_points(spec, sweep)
    if not points:
        raise InvalidConfigError(
            f"sweep {sweep!r} has no configuration on {spec.name} ({spec.n_layers} layers): "
            f"e.g. 'distance' needs five layers from layer 2 at distance 1 (7 layers)"
        )
    definition = sweep_definition(model, sweep, points, spec, settings)
    if measure:
        handle, rows = run_fixed_points(definition, [p.gamma for p in points], sweep=sweep,
                                        evaluator_factory=evaluator_factory, progress=progress)
    else:
        handle, rows = stored_points(definition)
        definition = handle.definition
    baseline = handle.baseline or {}
    return {
        "sweep": sweep,
        "study": handle.name,
        "storage": handle.target.display(),
        "model": model,
        "tasks": list(definition.evaluation.tasks),
        "limit": definition.evaluation.limit,
        "device": definition.device,
        "baseline": {
            "accuracy": baseline.get("accuracy"),
            "per_task": baseline.get("per_task"),
            "params": baseline.get("params"),
            "energy_method": baseline.get("energy_method"),
        },
        "points": [_point_row(p, sweep, spec, rows.get(p.gamma.hash(spec))) for p in points],
    }


def characterize(
    model: str,
    sweep: str,
    *,
    tasks: Sequence[str] | str = DEFAULT_TASKS,
    limit: int | None = None,
    storage: str | None = None,
    name: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    data_dir: str | None = None,
    batch_size: int = 16,
    efficiency: bool = True,
    workload: Workload | None = None,
    workers: int = 1,
    progress: bool = True,
    evaluator_factory: Any = None,
    measure: bool = True,
) -> dict[str, Any]:
    """Measure one of the paper's sweeps (or ``all``) on ``model``; resumes what exists.

    Args:
        model: a model name (``smollm2-135m``, ``tiny-llama``, an HF id or a directory).
        sweep: ``rank``, ``tensors``, ``groups``, ``layers``, ``distance``, ``case-study``
            or ``all`` (every sweep in turn, sharing measurements through the memo).
        tasks: lm-eval tasks (a list or ``"t1,t2"``).
        limit: documents per task (None: all).
        storage: database URL (default ``sqlite:///dse.db``).
        name: study name for a single sweep (default ``char-<model>-<sweep>-<hash>``).
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``float32``, ``bfloat16`` or ``float16``.
        data_dir: benchmark data directory (default ``$DSE_DATA_DIR`` or ``../shared/data``).
        batch_size: lm-eval batch size.
        efficiency: also measure latency, energy and memory ratios (paired ABBA runs).
        workload: the latency/energy workload (default: the engine's).
        workers: local worker processes per sweep.
        progress: show progress bars.
        evaluator_factory: ``factory(definition, progress=bool) -> Evaluator`` (tests).
        measure: False reports what the database holds and measures nothing (the sweep's
            study must exist; points not measured yet say ``"measured": false``).

    Returns:
        ``{"sweep": …, "points": [...], …}``: every point with its layers, tensors, rank,
        parameter reduction, accuracy drop and interval, per-task accuracy with its Wilson
        interval and the ratios measured. For ``all``, ``points`` holds every sweep's
        points (each names its ``sweep``) and ``sweeps`` each sweep's own result.

    Raises:
        DseError: an unknown sweep, model, task or storage, or a sweep with no point on
            this model (one line, before anything is measured).
    """
    from space.presets import load_spec

    if sweep != "all" and sweep not in SWEEPS:
        raise InvalidConfigError(f"unknown sweep {sweep!r}; known: {', '.join(SWEEP_NAMES)}, all")
    if isinstance(tasks, str):
        tasks = tuple(t.strip() for t in tasks.split(",") if t.strip())
    if sweep == "all" and name is not None:
        raise InvalidConfigError("--name names one sweep's study; with --sweep all each sweep names its own")
    spec = load_spec(model)
    settings = SweepSettings(tasks=tuple(tasks), limit=limit, storage=storage, name=name, device=device, dtype=dtype,
                             data_dir=data_dir, batch_size=batch_size, efficiency=efficiency, workload=workload,
                             workers=workers)
    names = SWEEP_NAMES if sweep == "all" else (sweep,)
    results = [
        _run_one(one, spec, model, progress=progress, evaluator_factory=evaluator_factory, settings=settings,
                 measure=measure)
        for one in names
        if sweep != "all" or sweep_points(spec, one)
    ]
    if len(results) == 1:
        return results[0]
    return {
        "sweep": "all",
        "model": model,
        "points": [p for r in results for p in r["points"]],
        "sweeps": results,
    }
