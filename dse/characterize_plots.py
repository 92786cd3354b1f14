"""Figures of a characterization sweep in the paper's form (Figs. 5–11).

One panel per metric: each task's accuracy (one line per task, 95 % Wilson intervals,
the original model as a dotted line of the same colour), the mean accuracy drop with
its paired interval, the parameter reduction, and the latency, energy and memory ratios
where they were measured. A line style per series (e.g. the two layer sets of the rank
sweep, or "one tensor in all layers" against "all tensors in few layers"). The caption
names the model, documents per task, the device, how energy was measured and the
command that reproduces the figure. Written as PNG (small, for docs) and SVG.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dse.study.goals import PAPER_ENERGY_SLOPE, PAPER_LATENCY_SLOPE

__all__ = ["write_sweep_plots", "task_title"]

_TITLES = {
    "dse_arc_easy": "ARC-Easy", "dse_arc_challenge": "ARC-Challenge", "dse_piqa": "PIQA",
    "dse_hellaswag": "HellaSwag", "dse_boolq": "BoolQ", "dse_truthfulqa_mc1": "TruthfulQA (MC1)",
    "dse_truthfulqa_mc2": "TruthfulQA (MC2)", "dse_winogrande": "WinoGrande", "dse_lambada": "LAMBADA",
    "dse_mmlu": "MMLU",
}
_X_TITLES = {
    "rank": "pruned rank (log scale)", "tensors": "decomposed tensor type (rank 1, every layer)",
    "groups": "tensor type (or its equal-reduction layer count)",
    "layers": "decomposed layer (0-based, all tensors, rank 1)",
    "distance": "distance between the five decomposed layers", "case-study": "parameter reduction (%)",
}
_STYLES = ("-", "--", ":", "-.")
# The paper's Sec. IV: each 1 % of parameters gives 0.5 % latency, 0.5 % energy, 0.4 % memory.
_PAPER_SLOPES = {"latency_ratio": PAPER_LATENCY_SLOPE, "energy_ratio": PAPER_ENERGY_SLOPE, "memory_ratio": 0.004}
_RATIOS = (("latency_ratio", "latency ratio"), ("energy_ratio", "energy ratio"), ("memory_ratio", "memory ratio"))


def task_title(task: str) -> str:
    """A readable benchmark name: ``dse_mmlu_high_school_geography`` → ``MMLU: high school geography``."""
    if task in _TITLES:
        return _TITLES[task]
    if task.startswith("dse_mmlu_"):
        return "MMLU: " + task.removeprefix("dse_mmlu_").replace("_", " ")
    return task.removeprefix("dse_").replace("_", " ")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _categorical(sweep: str) -> bool:
    return sweep in ("tensors", "groups")


def _series(points: Sequence[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for p in points:
        if p["series"] not in out:
            out.append(p["series"])
    return out


def _xs(result: dict[str, Any], pts: Sequence[dict[str, Any]], offset: float = 0.0) -> list[float]:
    """X positions; categorical sweeps shift each series a little so error bars do not overlap."""
    shift = offset if _categorical(result["sweep"]) else 0.0
    return [float(p["x"]) + shift for p in pts]


def _caption(result: dict[str, Any]) -> str:
    base = result.get("baseline") or {}
    measured = [p for p in result["points"] if p.get("measured")]
    energy = next((p.get("energy_method") for p in measured if p.get("energy_method")), None)
    energy_text = f"energy: {energy}" if energy else "energy: not measured"
    limit = result.get("limit")
    docs = f"{limit} documents per task" if limit else "all documents"
    command = (f"dse characterize {result['model']} --sweep {result['sweep']} --tasks {','.join(result['tasks'])}"
               + (f" --limit {limit}" if limit else "")
               + ("" if any(p.get("latency_ratio") is not None for p in measured) else " --no-efficiency"))
    device = result.get("device", "cpu")
    return (f"{result['model']} ({base.get('params') or '?'} parameters), {docs}, device {device}, "
            f"{energy_text}; {len(measured)}/{len(result['points'])} points measured; error bars: 95 % intervals\n"
            f"{command}")


def _accuracy_panel(ax: Any, result: dict[str, Any], styles: dict[str, str]) -> None:
    plt = _pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    base = (result.get("baseline") or {}).get("per_task") or {}
    for i, task in enumerate(result["tasks"]):
        color = colors[i % len(colors)]
        for k, (series, style) in enumerate(styles.items()):
            pts = sorted((p for p in result["points"]
                          if p["series"] == series and p.get("measured") and task in p["per_task"]),
                         key=lambda p: p["x"])
            if not pts:
                continue
            ys = [p["per_task"][task]["accuracy"] for p in pts]
            cis = [p["per_task"][task]["accuracy_ci"] or [y, y] for p, y in zip(pts, ys, strict=False)]
            err = [[max(0.0, y - c[0]) for y, c in zip(ys, cis, strict=True)],
                   [max(0.0, c[1] - y) for y, c in zip(ys, cis, strict=True)]]
            ax.errorbar(_xs(result, pts, 0.12 * k), ys, yerr=err, color=color, ls=style, marker="o", ms=3,
                        capsize=2, lw=1,
                        label=task_title(task) if series == next(iter(styles)) else None)
        if task in base:
            ax.axhline(base[task], color=color, ls=":", lw=1)
    ax.set_ylabel("accuracy (dotted: original model)")
    ax.set_title("accuracy per task")
    ax.legend(fontsize=7, ncol=2)


def _metric_panel(ax: Any, result: dict[str, Any], styles: dict[str, str], key: str, title: str) -> bool:
    drew = False
    for k, (series, style) in enumerate(styles.items()):
        pts = sorted((p for p in result["points"] if p["series"] == series and p.get(key) is not None),
                     key=lambda p: p["x"])
        if not pts:
            continue
        ys = [float(p[key]) for p in pts]
        ci_key = "drop_ci_pp" if key == "accuracy_drop_pp" else f"{key}_ci"
        cis = [p.get(ci_key) for p in pts]
        err = None
        if all(c and c[0] is not None and c[1] is not None for c in cis):
            err = [[max(0.0, y - c[0]) for y, c in zip(ys, cis, strict=True)],
                   [max(0.0, c[1] - y) for y, c in zip(ys, cis, strict=True)]]
        ax.errorbar(_xs(result, pts, 0.12 * k), ys, yerr=err, ls=style, marker="o", ms=3, capsize=2, lw=1,
                    color="black",
                    label=series if len(styles) > 1 else None)
        drew = True
    baseline = {"accuracy_drop_pp": 0.0, "param_reduction_pct": 0.0}.get(key, 1.0)
    ax.axhline(baseline, color="tab:gray", ls=":", lw=1)
    if result["sweep"] == "case-study" and key in _PAPER_SLOPES and drew:
        xs = sorted(float(p["x"]) for p in result["points"])
        slope = _PAPER_SLOPES[key]
        ax.plot(xs, [1 - slope * x for x in xs], color="tab:red", ls="--", lw=1,
                label=f"paper: {slope * 100:.1f} % per 1 % of parameters")
        ax.legend(fontsize=7)
    ax.set_title(title)
    if len(styles) > 1 and drew:
        ax.legend(fontsize=7)
    return drew


def write_sweep_plots(result: dict[str, Any], out_dir: str | Path, *, dpi: int = 80) -> list[Path]:
    """Write ``<sweep>.png`` and ``<sweep>.svg`` of one sweep's result; returns the paths."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sweep = result["sweep"]
    styles = {s: _STYLES[i % len(_STYLES)] for i, s in enumerate(_series(result["points"]))}
    panels: list[tuple[str, str]] = [("accuracy_drop_pp", "mean accuracy drop (pp; dotted: none)"),
                                     ("param_reduction_pct", "parameter reduction (%)")]
    panels += [(k, f"{t} (decomposed / original)") for k, t in _RATIOS
               if any(p.get(k) is not None for p in result["points"])]
    n = 1 + len(panels)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows + 0.6), squeeze=False)
    flat = [ax for row in axes for ax in row]
    _accuracy_panel(flat[0], result, styles)
    for ax, (key, title) in zip(flat[1:], panels, strict=False):
        _metric_panel(ax, result, styles, key, title)
    for ax in flat[n:]:
        ax.set_visible(False)
    first = _series(result["points"])[0] if result["points"] else None
    ticks = [p for p in result["points"] if p["series"] == first]
    for ax in flat[:n]:
        ax.set_xlabel(_X_TITLES.get(sweep, "point"))
        ax.grid(alpha=0.3)
        if sweep == "rank":
            ax.set_xscale("log")
        if _categorical(sweep):
            ax.set_xticks([p["x"] for p in ticks], [p["label"] for p in ticks], fontsize=7)
    fig.suptitle(f"{sweep} sweep of {result['model']}", fontsize=11)
    fig.text(0.01, 0.005, _caption(result), fontsize=7, va="bottom", ha="left", family="monospace")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    paths = [out / f"{sweep}.png", out / f"{sweep}.svg"]
    fig.savefig(paths[0], dpi=dpi)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths
