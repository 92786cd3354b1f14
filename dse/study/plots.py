"""PNG figures of a study (matplotlib, Agg backend: no display needed).

- ``pareto.png``: accuracy drop against parameter reduction and against the EDP ratio,
  every measured trial (feasible filled, infeasible hollow, stopped early as ×), the
  feasible Pareto front, τ as a dashed line, the paper's seeded configurations as stars.
- ``accuracy_per_task.png``: each task's accuracy against parameter reduction, the
  original model at 0% (the paper's Fig. 10).
- ``efficiency.png``: latency, energy and memory reduction against parameter reduction
  (the paper's Fig. 11), with the paper's 0.5%-per-1% slope for reference.
- ``history.png``: the objective per trial and the best feasible value so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse.study.goals import PAPER_LATENCY_SLOPE, Goal
from dse.study.queries import pareto_rows
from space.errors import StorageError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["write_plots", "PLOT_FILES"]

PLOT_FILES = ("pareto.png", "accuracy_per_task.png", "efficiency.png", "history.png")


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
        pts = [(r[x], r[y]) for r in rows if keep(r) and r.get(x) is not None and r.get(y) is not None]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], label=label, s=28, **style)


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
    ax.scatter([r[x] for r in seeds], [r[y] for r in seeds], marker="*", s=160, color="gold",
               edgecolors="black", zorder=5, label="paper's Table IV (scaled)")
    for r in seeds:
        ax.annotate(str(r["paper_seed"]).split(" {")[0].replace("Table IV ", "IV "), (r[x], r[y]),
                    textcoords="offset points", xytext=(6, 4), fontsize=7)


def _pareto(plt: Any, rows: Sequence[dict[str, Any]], tau: float, path: Path, title: str) -> None:
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
        ax.axhline(tau, color="tab:red", ls="--", lw=1, label=f"τ = {tau:g} pp")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy drop (pp)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{title}: accuracy drop vs savings")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _per_task(plt: Any, rows: Sequence[dict[str, Any]], baseline: dict[str, Any] | None, path: Path,
              title: str) -> None:
    measured = [r for r in _measured(rows) if r.get("per_task")]
    tasks = sorted({t for r in measured for t in r["per_task"]} | set((baseline or {}).get("per_task", {})))
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for task in tasks:
        pts = [(0.0, float(baseline["per_task"][task]))] if baseline and task in baseline.get("per_task", {}) else []
        pts += [(r["param_reduction_pct"], r["per_task"][task]["accuracy"]) for r in measured
                if task in r["per_task"] and not r["early_stopped"]]
        if pts:
            _points_and_means(ax, [(x, 100 * y) for x, y in pts], label=task, marker="o")
    ax.set_xlabel("parameter reduction (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"{title}: accuracy per task (cf. the paper's Fig. 10)")
    ax.grid(alpha=0.3)
    if tasks:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def _efficiency(plt: Any, rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    measured = _measured(rows)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    top = 0.0
    for metric, label, marker in (("latency_ratio", "latency", "o"), ("energy_ratio", "energy", "s"),
                                  ("memory_ratio", "memory", "^")):
        pts = [(r["param_reduction_pct"], 100 * (1 - r[metric])) for r in measured if r.get(metric) is not None]
        if pts:
            _points_and_means(ax, pts, label=f"{label} reduction", marker=marker)
            top = max(top, *(p[0] for p in pts))
    if top > 0:
        ax.plot([0, top], [0, 100 * PAPER_LATENCY_SLOPE * top], color="gray", ls=":", lw=1,
                label="paper: 0.5% per 1% of parameters")
    ax.set_xlabel("parameter reduction (%)")
    ax.set_ylabel("reduction vs the original (%)")
    ax.set_title(f"{title}: latency, energy, memory (cf. the paper's Fig. 11)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _history(plt: Any, rows: Sequence[dict[str, Any]], goal: Goal, path: Path, title: str) -> None:
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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(rows: Sequence[dict[str, Any]], out_dir: str | Path, *, tau: float, goal: Goal,
                baseline: dict[str, Any] | None, title: str) -> list[Path]:
    """Write the four PNG files into ``out_dir`` (created) and return their paths.

    Raises:
        StorageError: ``out_dir`` cannot be created or written.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write plots to {out}: {exc.strerror or exc}") from None
    plt = _pyplot()
    paths = [out / name for name in PLOT_FILES]
    try:
        _pareto(plt, rows, tau, paths[0], title)
        _per_task(plt, rows, baseline, paths[1], title)
        _efficiency(plt, rows, paths[2], title)
        _history(plt, rows, goal, paths[3], title)
    except OSError as exc:
        raise StorageError(f"cannot write plots to {out}: {exc.strerror or exc}") from None
    return paths
