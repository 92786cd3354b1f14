"""Figures of a study (matplotlib, Agg backend: no display needed), as PNG, PDF or SVG.

- ``pareto.png``: accuracy drop against parameter reduction and against the EDP ratio,
  every measured trial (feasible filled, infeasible hollow, stopped early as ×) with its
  95% interval of the drop as an error bar and its trial number, the feasible Pareto
  front, τ as a dashed line, the paper's seeded configurations as hollow stars around
  their trial's marker (so neither hides the other).
- ``accuracy_per_task.png``: each task's accuracy against parameter reduction, the
  original model at 0% (the paper's Fig. 10).
- ``efficiency.png``: latency, energy and memory reduction against parameter reduction
  (the paper's Fig. 11), with the paper's 0.5%-per-1% slope for reference.
- ``history.png``: the objective per trial and the best feasible value so far.

Task names are written as papers write them (``ARC-e``, ``PIQA``, …). Every figure
carries a caption line: model, documents per task, device, how energy was measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse.study.goals import PAPER_LATENCY_SLOPE, Goal
from dse.study.queries import pareto_rows
from space.errors import InvalidConfigError, StorageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["write_plots", "PLOT_FILES", "FORMATS", "DEFAULT_DPI", "paper_task_name", "caption_line",
           "PAPER_TASK_NAMES", "optuna_figures"]

PLOT_FILES = ("pareto.png", "accuracy_per_task.png", "efficiency.png", "history.png")
FORMATS = ("png", "pdf", "svg")
DEFAULT_DPI = 200
# lm-eval / dse task -> the name papers print (the paper's Tables and Figs. 10-11).
PAPER_TASK_NAMES = {
    "arc_easy": "ARC-e", "arc_challenge": "ARC-c", "boolq": "BoolQ", "hellaswag": "HellaSwag",
    "lambada": "LAMBADA", "lambada_openai": "LAMBADA", "piqa": "PIQA", "truthfulqa_mc1": "TruthfulQA (MC1)",
    "truthfulqa_mc2": "TruthfulQA (MC2)", "winogrande": "WinoGrande", "mmlu": "MMLU",
}


def paper_task_name(task: str) -> str:
    """``dse_arc_easy`` -> ``ARC-e``; unknown names unchanged."""
    return PAPER_TASK_NAMES.get(task.removeprefix("dse_"), task)


def _save(plt: Any, fig: Any, path: Path, dpi: int, caption: str | None) -> None:
    if caption:
        fig.text(0.01, 0.005, caption, fontsize=6.5, color="dimgray", ha="left", va="bottom")
        fig.tight_layout(rect=(0, 0.035, 1, 1))
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _measured(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] == "COMPLETE" and not r["rejected"]]


def _scatter_trials(ax: Axes, rows: Sequence[dict[str, Any]], x: str, y: str) -> None:
    groups: tuple[tuple[str, Callable[[dict[str, Any]], bool], dict[str, Any]], ...] = (
        ("feasible", lambda r: r["feasible"], {"marker": "o", "color": "tab:blue"}),
        ("infeasible", lambda r: not r["feasible"] and not r["early_stopped"],
         {"marker": "o", "facecolors": "none", "edgecolors": "tab:gray"}),
        ("stopped early", lambda r: r["early_stopped"], {"marker": "x", "color": "tab:red"}),
    )
    for label, keep, style in groups:
        kept = [r for r in rows if keep(r) and r.get(x) is not None and r.get(y) is not None]
        if not kept:
            continue
        xs, ys = [r[x] for r in kept], [r[y] for r in kept]
        if y == "accuracy_drop_pp":
            low = [max(0.0, r[y] - r["drop_ci_low_pp"]) if r.get("drop_ci_low_pp") is not None else 0.0 for r in kept]
            high = [max(0.0, r["drop_ci_high_pp"] - r[y]) if r.get("drop_ci_high_pp") is not None else 0.0
                    for r in kept]
            color = style.get("color", style.get("edgecolors"))
            ax.errorbar(xs, ys, yerr=[low, high], fmt="none", ecolor=color, elinewidth=0.8, capsize=2,
                        alpha=0.6, zorder=2)
        ax.scatter(xs, ys, label=label, s=28, zorder=4, **style)
        for r in kept:
            ax.annotate(str(r["number"]), (r[x], r[y]), textcoords="offset points", xytext=(4, -9), fontsize=6,
                        color="dimgray", zorder=6)


def _front_line(ax: Axes, rows: Sequence[dict[str, Any]], x: str, y: str) -> None:
    front = pareto_rows(rows, [x, y], feasible_only=True)
    if front:
        pts = sorted((r[x], r[y]) for r in front)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], drawstyle="steps-post", color="tab:green", lw=1.5,
                marker="o", ms=11, mfc="none", mew=1.5, label="Pareto front (feasible)")


def _seeds(ax: Axes, rows: Sequence[dict[str, Any]], x: str, y: str) -> None:
    seeds = [r for r in rows if r.get("paper_seed") and r.get(x) is not None and r.get(y) is not None]
    if not seeds:
        return
    # Hollow and larger than a trial marker, drawn below it: the trial's own marker stays visible.
    ax.scatter([r[x] for r in seeds], [r[y] for r in seeds], marker="*", s=260, facecolors="none",
               edgecolors="darkgoldenrod", linewidths=1.2, zorder=3, label="paper's Table IV (scaled)")
    for r in seeds:
        ax.annotate(str(r["paper_seed"]).split(" {")[0].replace("Table IV ", "IV "), (r[x], r[y]),
                    textcoords="offset points", xytext=(6, 4), fontsize=7)


def _intervals(ax: Axes, rows: Sequence[dict[str, Any]], x: str, y: str) -> None:
    """Each trial's 95 % intervals as error bars; stand-in values (not measured) ringed and labelled."""
    pts = [r for r in rows if r.get(x) is not None and r.get(y) is not None]
    for r in pts:
        xci = r.get(f"{x}_ci")
        yci = [r.get("drop_ci_low_pp"), r.get("drop_ci_high_pp")] if y == "accuracy_drop_pp" else r.get(f"{y}_ci")
        xerr = [[r[x] - xci[0]], [xci[1] - r[x]]] if xci and None not in xci else None
        yerr = [[r[y] - yci[0]], [yci[1] - r[y]]] if yci and None not in yci else None
        if xerr or yerr:
            ax.errorbar(r[x], r[y], xerr=xerr, yerr=yerr, fmt="none", ecolor="tab:gray", alpha=0.35, lw=0.8)
    standins = [r for r in pts if {x, y} & set(r.get("standins") or {})]
    if standins:
        ax.scatter([r[x] for r in standins], [r[y] for r in standins], marker="s", s=90, facecolors="none",
                   edgecolors="tab:orange", label="stand-in value (see standins)")


def _pareto(plt: Any, rows: Sequence[dict[str, Any]], tau: float, path: Path, title: str, dpi: int,
            caption: str | None) -> None:
    has_edp = any(r.get("edp_ratio") is not None for r in _measured(rows))
    fig, axes = plt.subplots(1, 2 if has_edp else 1, figsize=(12 if has_edp else 6.5, 4.8), squeeze=False)
    panels = [("param_reduction_pct", "parameter reduction (%)")]
    if has_edp:
        panels.append(("edp_ratio", "EDP ratio to the original (latency × energy)"))
    measured = _measured(rows)
    for ax, (x, xlabel) in zip(axes[0], panels, strict=True):
        _scatter_trials(ax, measured, x, "accuracy_drop_pp")
        _front_line(ax, measured, x, "accuracy_drop_pp")
        _seeds(ax, measured, x, "accuracy_drop_pp")
        _intervals(ax, measured, x, "accuracy_drop_pp")
        ax.axhline(tau, color="tab:red", ls="--", lw=1, label=f"τ = {tau:g} pp")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy drop (pp), 95% CI")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: accuracy drop vs savings (numbers: trials)")
    _save(plt, fig, path, dpi, caption)


def _per_task(plt: Any, rows: Sequence[dict[str, Any]], baseline: dict[str, Any] | None, path: Path,
              title: str, dpi: int, caption: str | None) -> None:
    measured = [r for r in _measured(rows) if r.get("per_task")]
    tasks = sorted({t for r in measured for t in r["per_task"]} | set((baseline or {}).get("per_task", {})))
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for task in tasks:
        pts = [(0.0, float(baseline["per_task"][task]))] if baseline and task in baseline.get("per_task", {}) else []
        pts += [(r["param_reduction_pct"], r["per_task"][task]["accuracy"]) for r in measured
                if task in r["per_task"] and not r["early_stopped"]]
        if pts:
            _points_and_means(ax, [(x, 100 * y) for x, y in pts], label=paper_task_name(task), marker="o")
    ax.set_xlabel("parameter reduction (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title}: accuracy per task (cf. the paper's Fig. 10)")
    ax.grid(alpha=0.3)
    if tasks:
        ax.legend(fontsize=7)
    _save(plt, fig, path, dpi, caption)


def _points_and_means(ax: Any, pts: Sequence[tuple[float, float]], *, label: str, marker: str) -> None:
    """Every trial as a point, and a line through the mean at each x.

    Several γ often share one parameter reduction (the same number of whole layers), so
    joining the raw points in x order would draw meaningless vertical zig-zags.
    """
    by_x: dict[float, list[float]] = {}
    for x, y in pts:
        by_x.setdefault(round(x, 6), []).append(y)
    xs = sorted(by_x)
    line = ax.plot(xs, [sum(by_x[x]) / len(by_x[x]) for x in xs], lw=1, label=label)[0]
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=16, marker=marker, color=line.get_color())


def _efficiency(plt: Any, rows: Sequence[dict[str, Any]], path: Path, title: str, dpi: int,
                caption: str | None) -> None:
    measured = _measured(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    top = 0.0
    # Memory is left out: memory_ratio counts the model's bytes (the parameter ratio, a y = x
    # line), not a measured footprint.
    for metric, label, marker in (("latency_ratio", "latency", "o"), ("energy_ratio", "energy", "s")):
        pts = [(r["param_reduction_pct"], 100 * (1 - r[metric])) for r in measured if r.get(metric) is not None]
        if pts:
            _points_and_means(ax, pts, label=f"{label} reduction", marker=marker)
            top = max(top, *(p[0] for p in pts))
    if top > 0:
        ax.plot([0, top], [0, 100 * PAPER_LATENCY_SLOPE * top], color="gray", ls=":", lw=1,
                label="paper: 0.5% per 1% of parameters")
    ax.set_xlabel("parameter reduction (%)")
    ax.set_ylabel("reduction vs the original (%)")
    ax.set_title(f"{title}: latency and energy (cf. the paper's Fig. 11)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(plt, fig, path, dpi, caption)


def _history(plt: Any, rows: Sequence[dict[str, Any]], goal: Goal, path: Path, title: str, dpi: int,
             caption: str | None) -> None:
    metric, direction = goal.metrics[0], goal.directions[0]
    measured = [r for r in _measured(rows) if r.get("values")]
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    feasible = [(r["number"], r["values"][0]) for r in measured if r["feasible"]]
    infeasible = [(r["number"], r["values"][0]) for r in measured if not r["feasible"]]
    if feasible:
        ax.scatter(*zip(*feasible, strict=True), color="tab:blue", s=24, label="feasible")
    if infeasible:
        ax.scatter(*zip(*infeasible, strict=True), facecolors="none", edgecolors="tab:gray", s=24,
                   label="infeasible (stand-in if stopped early)")
    best: list[tuple[int, float]] = []
    current: float | None = None
    for number, value in sorted(feasible):
        if current is None or (value < current if direction == "minimize" else value > current):
            current = value
        best.append((number, current))
    if best:
        ax.step([b[0] for b in best], [b[1] for b in best], where="post", color="tab:green",
                label="best feasible so far")
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{metric} ({direction})")
    ax.set_title(f"{title}: optimization history")
    ax.grid(alpha=0.3)
    if feasible or infeasible:
        ax.legend(fontsize=7)
    _save(plt, fig, path, dpi, caption)


def caption_line(definition: Any, rows: Sequence[dict[str, Any]]) -> str:
    """Model, documents per task, device, energy method: what a reader needs to weigh the figure."""
    ev = definition.evaluation
    docs = f"first {ev.limit} documents per task" if ev.limit else "all documents of each task"
    methods = sorted({str(r["energy_method"]) for r in rows if r.get("energy_method")})
    estimated = any(r.get("energy_estimated") for r in rows)
    energy = (f"energy: {', '.join(methods)}{' (estimated)' if estimated else ''}" if methods
              else "energy: not measured")
    tasks = ", ".join(paper_task_name(t) for t in ev.tasks)
    return (f"{definition.model} ({definition.dtype}) on {definition.device}; {tasks}; {docs}; {energy}; "
            f"τ = {definition.tau:g} pp")


def write_plots(rows: Sequence[dict[str, Any]], out_dir: str | Path, *, tau: float, goal: Goal,
                baseline: dict[str, Any] | None, title: str, fmt: str = "png", dpi: int = DEFAULT_DPI,
                caption: str | None = None) -> list[Path]:
    """Write the four figures into ``out_dir`` (created) and return their paths.

    Args:
        rows: the study's trial rows (``StudyHandle.trials``).
        out_dir: where the files go.
        tau: the accuracy-drop tolerance drawn as a line.
        goal: the study's objective (the history's metric and direction).
        baseline: the original model's record (per-task accuracy at 0 %).
        title: the study's name, in every title.
        fmt: ``png``, ``pdf`` or ``svg`` (the file names' suffix follows).
        dpi: resolution of PNG files (and of raster parts of PDF/SVG).
        caption: a line printed under every figure (see :func:`caption_line`).

    Raises:
        StorageError: ``out_dir`` cannot be created or written.
        InvalidConfigError: unknown format or a dpi below 1.
    """
    if fmt not in FORMATS:
        raise InvalidConfigError(f"unknown figure format {fmt!r}; allowed: {', '.join(FORMATS)}")
    if dpi < 1:
        raise InvalidConfigError(f"dpi must be at least 1, got {dpi}")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write plots to {out}: {exc.strerror or exc}") from None
    plt = _pyplot()
    paths = [out / Path(name).with_suffix(f".{fmt}") for name in PLOT_FILES]
    try:
        _pareto(plt, rows, tau, paths[0], title, dpi, caption)
        _per_task(plt, rows, baseline, paths[1], title, dpi, caption)
        _efficiency(plt, rows, paths[2], title, dpi, caption)
        _history(plt, rows, goal, paths[3], title, dpi, caption)
    except OSError as exc:
        raise StorageError(f"cannot write plots to {out}: {exc.strerror or exc}") from None
    return paths


def optuna_figures(study: Any, goal: Goal, out_dir: str | Path, *, fmt: str = "png", dpi: int = DEFAULT_DPI,
                   caption: str | None = None) -> list[Path]:
    """Optuna's own matplotlib figures where they fit: the optimization history.

    Optuna draws infeasible trials in grey and its best-value line over feasible trials
    only (it reads the trials' constraints). Two-objective goals get no such figure
    (their history is a front, drawn by ``pareto``); a study without complete trials
    neither.
    """
    import warnings

    import optuna
    from optuna.visualization.matplotlib import plot_optimization_history

    if goal.multi_objective or not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        return []
    plt = _pyplot()
    path = Path(out_dir) / f"optuna_history.{fmt}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = plot_optimization_history(study, target_name=goal.metrics[0])
    fig = ax.get_figure(root=True)
    assert fig is not None  # Optuna draws on a new figure
    fig.set_size_inches(6.5, 4.8)
    ax.set_title(f"{study.study_name}: optimization history (Optuna; grey = infeasible)")
    try:
        _save(plt, fig, path, dpi, caption)
    except OSError as exc:
        raise StorageError(f"cannot write plots to {out_dir}: {exc.strerror or exc}") from None
    return [path]
