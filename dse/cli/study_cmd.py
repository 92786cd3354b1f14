"""``dse study``: run, resume and query design-space studies.

Thin commands: parse the flags, call :mod:`dse.study.api`, print a table (or with
``--json`` exactly one JSON object or list on stdout; progress bars go to stderr).

One module because it is the ``dse study`` group: each subcommand parses, calls
:mod:`dse.study.api` and prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from dse.cli._common import console, emit_json, json_option, print_table

__all__ = ["study"]

_STORAGE_HELP = "Database URL: sqlite:///path.db (default sqlite:///dse.db here), postgresql://…, mysql://…"


def _storage_option(func: Any) -> Any:
    return click.option("--storage", default=None, metavar="URL", help=_STORAGE_HELP)(func)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_ROW_COLUMNS = ("#", "γ (0-based layers)", "drop pp [CI]", "EDP [CI]", "latency", "energy", "params −%",
                "feasible", "memo")


def _with_ci(value: Any, interval: Any, digits: int = 3) -> str:
    """A value with its ``[low, high]`` interval when there is one."""
    if value is None:
        return "—"
    if not interval or interval[0] is None:
        return _fmt(value, digits)
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def _edp_cell(row: dict[str, Any]) -> str:
    """EDP ratio with its interval; a stand-in is marked (*) and a noisy measurement (noisy)."""
    cell = _with_ci(row.get("edp_ratio"), row.get("edp_ratio_ci"))
    if "edp_ratio" in (row.get("standins") or {}):
        cell += " *"
    if row.get("noisy"):
        cell += " (noisy)"
    return cell


def _row_cells(row: dict[str, Any]) -> list[str]:
    interval = [row.get("drop_ci_low_pp"), row.get("drop_ci_high_pp")]
    drop = _with_ci(row.get("accuracy_drop_pp"), interval if interval[1] is not None else None, 2)
    feasible = _fmt(row["feasible"]) + (" (stopped early)" if row.get("early_stopped") else "")
    if row.get("feasible_confident"):
        feasible += " (confident)"
    if row.get("rejected"):
        feasible = "rejected"
    return [
        str(row["number"]), str(row.get("gamma_label") or "—"), drop, _edp_cell(row),
        _fmt(row.get("latency_ratio")), _fmt(row.get("energy_ratio")), _fmt(row.get("param_reduction_pct"), 1),
        feasible, _fmt(row.get("memoized")),
    ]


def _print_rows(title: str, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        console().print(f"{title}: no trials to show")
        return
    print_table(title, _ROW_COLUMNS, [_row_cells(r) for r in rows])
    notes = sorted({f"{key}: {why}" for r in rows for key, why in (r.get("standins") or {}).items()})
    if notes:
        console().print("  * stand-ins, not measurements: " + "; ".join(notes[:3])
                        + (f" (and {len(notes) - 3} more)" if len(notes) > 3 else ""))


def _rank_text(gamma: dict[str, Any]) -> str:
    """One rank, or the range of per-tensor ranks (``--json`` lists every pair), and the method."""
    rank = gamma.get("rank")
    if isinstance(rank, dict) and rank:
        values = [int(v) for v in rank.values()]
        text = f"ranks {min(values)}–{max(values)} per tensor ({len(values)} layer×tensor pairs; --json lists them)"
    else:
        text = f"rank {rank}"
    method = gamma.get("method")
    return f"{text}, method {method}" if method else text


def _print_best(handle: Any, best: dict[str, Any] | None) -> None:
    out = console()
    if best is None:
        out.print(f"[bold]{handle.name}[/]: no feasible trial yet (accuracy drop < τ = {handle.definition.tau:g} pp)")
        return
    gamma = best.get("gamma") or {}
    out.print(
        f"[bold]Best feasible configuration[/] of {handle.name} (trial {best['number']}, "
        f"objective {handle.definition.objective}):\n"
        f"  layers (0-based) {gamma.get('layers')}, tensors {gamma.get('tensors')}, {_rank_text(gamma)}\n"
        f"  accuracy drop {_with_ci(best.get('accuracy_drop_pp'), _drop_ci(best), 2)} pp "
        f"(τ = {handle.definition.tau:g}, {handle.definition.evaluation.feasibility}"
        f"{', feasible with confidence' if best.get('feasible_confident') else ''}), "
        f"EDP ratio {_edp_cell(best)}, "
        f"latency ratio {_with_ci(best.get('latency_ratio'), best.get('latency_ratio_ci'))}, "
        f"energy ratio {_fmt(best.get('energy_ratio'))}, parameters −{_fmt(best.get('param_reduction_pct'), 1)}%"
    )
    if best.get("decided_by"):
        out.print(f"  decided: {best['decided_by']}")
    for key, why in (best.get("standins") or {}).items():
        out.print(f"  stand-in {key}: {why}")


def _drop_ci(row: dict[str, Any]) -> list[float] | None:
    if row.get("drop_ci_high_pp") is None:
        return None
    return [row["drop_ci_low_pp"], row["drop_ci_high_pp"]]


def _feasible_line(handle: Any, counts: dict[str, int]) -> str:
    d = handle.definition
    return (f"{counts['feasible']} of {counts['complete']} measured trials feasible ({d.evaluation.feasibility}: "
            f"drop < τ = {d.tau:g} pp); {counts.get('feasible_confident', 0)} feasible with "
            f"{d.evaluation.confidence:.0%} confidence (the interval's upper bound below τ)")


def _rule_overrides(current: dict[str, Any], items: Sequence[str]) -> dict[str, Any] | None:
    if not items:
        return None
    from space.rules import RuleSet

    parsed = RuleSet.parse(items, start=RuleSet(rules=dict(current)))
    return {name: (True if value is None else value) for name, value in parsed.rules.items()}


@click.group(help="Run, resume and query design-space studies (Optuna, stored in a database).")
def study() -> None:
    """The ``study`` command group."""


@study.command(help="Run a study from a TOML file and/or flags; an existing study of the same name is resumed.")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="Study name (default: the file's stem).")
@click.option("--model", default=None, help="Model: smollm2-135m, tiny-llama, an HF id or a local dir.")
@click.option("--tasks", default=None, metavar="T1,T2",
              help="Comma-separated lm-eval tasks, e.g. dse_arc_easy,dse_piqa.")
@click.option("--limit", type=int, default=None, help="Documents per task.")
@click.option("--tau", type=float, default=None, help="Accuracy-drop tolerance τ in percentage points (default 4).")
@click.option("--n-trials", type=int, default=None, help="Measured trials the study holds when done.")
@click.option("--timeout", type=float, default=None, help="Stop asking for trials after this many seconds.")
@_storage_option
@click.option("--seed", type=int, default=None, help="Sampler seed.")
@click.option("--workers", type=int, default=None, help="Local worker processes on this study.")
@click.option("--sampler", default=None, help="tpe, nsga2, gp or random.")
@click.option("--encoding", default=None, help="full, gaps or spacing.")
@click.option("--objective", default=None, help="edp, latency, energy, params, edp-drop or reduction-drop.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N.")
@click.option("--dtype", default=None, help="float32, bfloat16 or float16.")
@click.option("--data-dir", default=None, help="Benchmark data directory.")
@click.option("--rule", "rule_items", multiple=True, metavar="NAME[=VALUE]",
              help="Switch a heuristic rule on (NAME or NAME=VALUE) or off (NAME=off); repeatable.")
@click.option("--plots", "plots_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the plots (default plots/<name>).")
@click.option("--no-plots", is_flag=True, help="Write no plots.")
@click.option("--force", is_flag=True, help="Continue an existing study whose definition changed.")
@click.option("--screen/--no-screen", "screen", default=None,
              help="KL screen: skip γ surely above τ (--no-screen evaluates every γ fully, screened ones too).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
def run(file: Path | None, name: str | None, model: str | None, tasks: str | None, limit: int | None,
        tau: float | None, n_trials: int | None, timeout: float | None, storage: str | None, seed: int | None,
        workers: int | None, sampler: str | None, encoding: str | None, objective: str | None,
        device: str | None, dtype: str | None, data_dir: str | None, rule_items: tuple[str, ...],
        plots_dir: Path | None, no_plots: bool, force: bool, screen: bool | None, quiet: bool,
        as_json: bool) -> None:
    from dse.study.api import resolve_definition, run_study

    definition = resolve_definition(
        file, name=name, model=model, tasks=tasks, limit=limit, tau=tau, n_trials=n_trials, timeout=timeout,
        storage=storage, seed=seed, workers=workers, sampler=sampler, encoding=encoding, objective=objective,
        device=device, dtype=dtype, data_dir=data_dir, screen=screen,
    )
    rules = _rule_overrides(definition.rules, rule_items)
    if rules is not None:
        definition = definition.with_overrides(rules=rules)
    plots: bool | Path = False if no_plots else (plots_dir if plots_dir is not None else True)
    handle = run_study(definition, force=force, progress=not quiet, plots=plots)
    _report(handle, as_json)


@study.command(help="Continue a stored study with its stored definition.")
@click.argument("name")
@_storage_option
@click.option("--n-trials", type=int, default=None, help="Run this many more trials (default: up to its n_trials).")
@click.option("--timeout", type=float, default=None, help="Stop asking for trials after this many seconds.")
@click.option("--workers", type=int, default=None, help="Local worker processes.")
@click.option("--plots", "plots_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the plots (default plots/<name>).")
@click.option("--no-plots", is_flag=True, help="Write no plots.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
def resume(name: str, storage: str | None, n_trials: int | None, timeout: float | None, workers: int | None,
           plots_dir: Path | None, no_plots: bool, quiet: bool, as_json: bool) -> None:
    from dse.study.api import resume_study

    plots: bool | Path = False if no_plots else (plots_dir if plots_dir is not None else True)
    handle = resume_study(name, storage=storage, n_trials=n_trials, timeout=timeout, workers=workers,
                          progress=not quiet, plots=plots)
    _report(handle, as_json)


def _report(handle: Any, as_json: bool) -> None:
    from dataclasses import asdict

    best = handle.best()
    metrics = handle.default_front_metrics()
    front = handle.pareto_front(*metrics)
    if as_json:
        emit_json({
            "name": handle.name,
            "storage": handle.target.display(),
            "created": handle.created,
            "run": asdict(handle.run_stats) if handle.run_stats is not None else None,
            "counts": handle.counts(),
            "best": best,
            "pareto_metrics": metrics,
            "pareto": front,
            "plots": [str(p) for p in handle.plot_paths],
        })
        return
    out = console()
    stats = handle.run_stats
    if stats is not None:
        out.print(
            f"{handle.name}: {stats.evaluated} evaluated, {stats.memoized} from the memo, "
            f"{stats.early_stopped} stopped early, {stats.rejected} rejected by the rules, "
            f"{stats.reaped} stale trial(s) recovered this run (stopped by {stats.stopped_by})"
        )
    out.print(_feasible_line(handle, handle.counts()))
    _print_best(handle, best)
    _print_rows(f"Pareto front ({' vs '.join(metrics)}, feasible)", front)
    if handle.plot_paths:
        out.print(f"Plots written to {Path(handle.plot_paths[0]).parent}/: "
                  + ", ".join(Path(p).name for p in handle.plot_paths))


@study.command(name="list", help="The studies in a database.")
@_storage_option
@json_option
def list_cmd(storage: str | None, as_json: bool) -> None:
    from dse.study.api import list_studies

    studies = list_studies(storage=storage)
    if as_json:
        emit_json({"studies": studies})
        return
    rows = []
    for s in studies:
        c = s["counts"]
        best_key = next(k for k in s if k.startswith("best_") and k != "best_gamma")
        rows.append([s["name"], s["model"], s["objective"], f"{s['tau']:g}", c["complete"], c["feasible"],
                     c["failed"], s["best_gamma"] or "—", _fmt(s[best_key])])
    print_table("Studies", ["name", "model", "objective", "τ pp", "complete", "feasible", "failed",
                            "best γ", "best value"], rows)


@study.command(help="A study's definition, baseline, trial counts and best feasible configuration.")
@click.argument("name")
@_storage_option
@json_option
def show(name: str, storage: str | None, as_json: bool) -> None:
    from dse.study.api import load_study

    handle = load_study(name, storage=storage)
    summary = handle.summary()
    if as_json:
        emit_json(summary)
        return
    d = handle.definition
    out = console()
    out.print(f"[bold]{name}[/] in {summary['storage']}")
    out.print(f"  model {d.model} ({d.device}, {d.dtype}); tasks {', '.join(d.evaluation.tasks)}, "
              f"limit {d.evaluation.limit}; τ = {d.tau:g} pp; objective {d.objective}")
    out.print(f"  search: encoding {d.search.encoding}, sampler {d.search.sampler}, seed {d.search.seed}; "
              f"rules {', '.join(f'{k}={v}' for k, v in d.rules.items()) or 'none'}; n_trials {d.n_trials}")
    base = summary["baseline"]
    if base:
        per_task = ", ".join(f"{t} {v:.3f}" for t, v in base.get("per_task", {}).items())
        out.print(f"  baseline: accuracy {base['accuracy']:.4f} ({per_task}); "
                  f"latency {_fmt(base.get('latency_s'), 4)} s, "
                  f"energy {_fmt(base.get('energy_j'))} J ({base.get('energy_method') or '—'}), "
                  f"{base['params']:,} parameters")
    c = summary["counts"]
    print_table("Trials", list(c), [[str(v) for v in c.values()]])
    out.print(_feasible_line(handle, c))
    measured = [r for r in handle.trials() if r["state"] == "COMPLETE" and not r["rejected"]]
    _print_rows("Measured trials (drop and EDP ratio with their intervals)", measured)
    _print_best(handle, summary["best"])


@study.command(help="The best feasible trial (accuracy drop < τ) by the study's objective.")
@click.argument("name")
@_storage_option
@click.option("--save-model", "save_model", default=None, metavar="DIR",
              help="Save that trial's decomposed model to DIR (loads with AutoModelForCausalLM + "
                   "trust_remote_code, lm-eval's hf model, dse evaluate/generate).")
@click.option("--trial", "trial_number", type=int, default=None, metavar="N",
              help="With --save-model: save trial N instead of the best feasible one.")
@click.option("--device", default="cpu", show_default=True, help="Device used to decompose for --save-model.")
@json_option
def best(name: str, storage: str | None, save_model: str | None, trial_number: int | None, device: str,
         as_json: bool) -> None:
    from dse.study.api import load_study

    handle = load_study(name, storage=storage)
    if save_model is None:
        if trial_number is not None:
            from space.errors import InvalidConfigError

            raise InvalidConfigError("--trial N selects the trial --save-model saves; give --save-model DIR too")
        row = handle.best()
        if as_json:
            emit_json({"name": name, "best": row})
            return
        _print_best(handle, row)
        return
    from dse.export.trial import save_trial_model

    row, out = save_trial_model(handle, save_model, number=trial_number, device=device)
    if as_json:
        emit_json({"name": name, "best": row, "saved_model": str(out)})
        return
    if trial_number is None:
        _print_best(handle, row)
    console().print(f"trial {row['number']} ({row.get('gamma_label')}) saved to {out}")


@study.command(help="The Pareto front over two or three recorded metrics (feasible trials unless --all).")
@click.argument("name")
@click.option("--x", "x", default=None, help="First metric (default: the objective's, e.g. edp_ratio).")
@click.option("--y", "y", default=None, help="Second metric (default accuracy_drop_pp).")
@click.option("--z", "z", default=None, help="Optional third metric.")
@click.option("--all", "include_all", is_flag=True, help="Include infeasible trials.")
@_storage_option
@json_option
def pareto(name: str, x: str | None, y: str | None, z: str | None, include_all: bool, storage: str | None,
           as_json: bool) -> None:
    from dse.study.api import load_study

    handle = load_study(name, storage=storage)
    defaults = handle.default_front_metrics()
    metrics = [x or defaults[0], y or defaults[1]] + ([z] if z else [])
    front = handle.pareto_front(*metrics, feasible_only=not include_all)
    if as_json:
        emit_json({"name": name, "metrics": metrics, "feasible_only": not include_all, "trials": front})
        return
    _print_rows(f"Pareto front of {name} ({' vs '.join(metrics)}, {'all' if include_all else 'feasible'})", front)


@study.command(help="Every trial as CSV or JSON (stdout, or --out FILE); --json alone prints one JSON object.")
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False, path_type=Path),
              help="Write to this file instead of stdout.")
@_storage_option
@json_option
def export(name: str, fmt: str, out_file: Path | None, storage: str | None, as_json: bool) -> None:
    from dse.study.api import load_study
    from space.errors import StorageError

    handle = load_study(name, storage=storage)
    # --json on stdout means one JSON object with the trials; with --out a JSON summary of the write.
    if out_file is None and as_json:
        emit_json({"name": name, "trials": handle.trials()})
        return
    text = handle.export(fmt)
    if out_file is None:
        click.echo(text, nl=False)
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise StorageError(f"cannot write {out_file}: {exc.strerror or exc}") from None
    n_trials = len(handle.trials())
    if as_json:
        emit_json({"name": name, "path": str(out_file), "trials": n_trials})
        return
    console().print(f"{n_trials} trials written to {out_file}")


@study.command(help="Write the study's figures (Pareto front, per-task accuracy, efficiency, history).")
@click.argument("name")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the figure files (created).")
@click.option("--format", "fmt", type=click.Choice(["png", "pdf", "svg"]), default="png", show_default=True)
@click.option("--dpi", type=click.IntRange(min=1), default=200, show_default=True,
              help="Resolution of PNG files.")
@_storage_option
@json_option
def plot(name: str, out_dir: Path, fmt: str, dpi: int, storage: str | None, as_json: bool) -> None:
    from dse.study.api import load_study

    paths = load_study(name, storage=storage).plot(out_dir, fmt=fmt, dpi=dpi)
    if as_json:
        emit_json({"name": name, "plots": [str(p) for p in paths]})
        return
    console().print(f"Plots written to {out_dir}/: " + ", ".join(p.name for p in paths))


def _add_dashboard() -> None:
    from dse.cli.dashboard_cmd import dashboard

    study.add_command(dashboard)


_add_dashboard()
