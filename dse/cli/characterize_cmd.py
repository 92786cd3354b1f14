"""``dse characterize``: the paper's sweeps (Figs. 5–11) on a model, as resumable studies.

Thin: parse the flags, call :func:`dse.characterize`, print a table (or with
``--json`` exactly one JSON object), and write the sweep's figures when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from dse.cli._common import console, emit_json, json_option, print_table

__all__ = ["characterize"]

_SWEEPS = ("rank", "tensors", "groups", "layers", "distance", "case-study", "all")


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _drop(point: dict[str, Any]) -> str:
    if not point.get("measured"):
        return "not measured"
    low, high = point["drop_ci_pp"]
    ci = f" [{low:.1f}, {high:.1f}]" if low is not None and high is not None else ""
    return f"{point['accuracy_drop_pp']:.2f}{ci}"


def _print_sweep(result: dict[str, Any]) -> None:
    tasks = result["tasks"]
    columns = ["point", "layers (0-based)", "tensors", "rank", "params −%", "drop pp [95% CI]",
               *[t.removeprefix("dse_") for t in tasks], "latency", "energy", "memory"]
    rows = []
    for p in result["points"]:
        per_task = p.get("per_task") or {}
        accs = [_fmt(per_task[t]["accuracy"], 3) if t in per_task else "—" for t in tasks]
        layers = ",".join(map(str, p["layers"])) if len(p["layers"]) <= 12 else f"{len(p['layers'])} layers"
        rows.append([p["label"], layers,
                     ",".join(p["tensors"]) if len(p["tensors"]) < 7 else "all", p["rank"],
                     _fmt(p["param_reduction_pct"], 1), _drop(p), *accs, _fmt(p.get("latency_ratio"), 3),
                     _fmt(p.get("energy_ratio"), 3), _fmt(p.get("memory_ratio"), 3)])
    base = result["baseline"]
    per_task = base.get("per_task") or {}
    title = (f"{result['sweep']} sweep of {result['model']} (study {result['study']}, {result['limit'] or 'all'} "
             f"documents per task); baseline " + ", ".join(f"{t.removeprefix('dse_')} {per_task[t]:.3f}"
                                                           for t in tasks if t in per_task))
    print_table(title, columns, rows)
    measured = [p for p in result["points"] if p.get("measured")]
    worst = sorted(measured, key=lambda p: -p["accuracy_drop_pp"])[:3]
    if worst:
        console().print("most harmful: " + "; ".join(f"{p['label']} ({_drop(p)} pp)" for p in worst))


@click.command(help="Measure one of the paper's characterization sweeps (Figs. 5–11) on MODEL. "
                    "Each sweep is a study of fixed configurations: rerunning resumes it.")
@click.argument("model")
@click.option("--sweep", required=True, type=click.Choice(_SWEEPS),
              help="rank (Fig. 5), tensors (6), groups (7), layers (8), distance (9), case-study (10-11) or all.")
@click.option("--tasks", default=None, metavar="T1,T2",
              help="Comma-separated lm-eval tasks (default dse_arc_easy,dse_piqa,dse_hellaswag).")
@click.option("--limit", type=int, default=None, help="Documents per task (default: all).")
@click.option("--storage", default=None, metavar="URL", help="Database URL (default sqlite:///dse.db).")
@click.option("--name", default=None, help="Study name of a single sweep (default char-<model>-<sweep>-<hash>).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--dtype", default="float32", show_default=True, help="float32, bfloat16 or float16.")
@click.option("--data-dir", default=None, help="Benchmark data directory.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="lm-eval batch size.")
@click.option("--no-efficiency", is_flag=True, help="Measure accuracy only (no latency, energy, memory).")
@click.option("--workers", type=int, default=1, show_default=True, help="Local worker processes.")
@click.option("--plots", "plots_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Also write the sweep's figures (PNG and SVG) into this directory.")
@click.option("--show", is_flag=True, help="Print what the database holds; measure nothing.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
def characterize(model: str, sweep: str, tasks: str | None, limit: int | None, storage: str | None,
                 name: str | None, device: str, dtype: str, data_dir: str | None, batch_size: int,
                 no_efficiency: bool, workers: int, plots_dir: Path | None, show: bool, quiet: bool,
                 as_json: bool) -> None:
    """Parse, call :func:`dse.characterize`, print (and plot)."""
    from dse.characterize_api import DEFAULT_TASKS
    from dse.characterize_api import characterize as run
    from space.errors import InvalidConfigError

    if limit is not None and limit < 1:
        raise InvalidConfigError(f"--limit must be at least 1, got {limit}")
    result = run(model, sweep, tasks=tasks if tasks is not None else DEFAULT_TASKS, limit=limit, storage=storage,
                 name=name, device=device, dtype=dtype, data_dir=data_dir, batch_size=batch_size,
                 efficiency=not no_efficiency, workers=workers, progress=not quiet, measure=not show)
    if plots_dir is not None:
        from dse.characterize_plots import write_sweep_plots

        results = result.get("sweeps", [result])
        result["plots"] = [str(p) for r in results for p in write_sweep_plots(r, plots_dir)]
    if as_json:
        emit_json(result)
        return
    for one in result.get("sweeps", [result]):
        _print_sweep(one)
    if result.get("plots"):
        console().print("figures: " + ", ".join(result["plots"]))
