"""The tables, verdicts and figures of docs/results.md, from `dse characterize --json` outputs.

Reads ``characterize-<sweep>.json`` files (written by ``benchmarks/characterize_smollm2.sh``),
writes each sweep's figure (``--figures``), and prints markdown: each sweep's points and
each of the paper's claims checked on them. A claim *holds* when the paper's direction
is seen with non-overlapping 95 % intervals, *does not hold* when the opposite is, and is
*not decided* otherwise (the point estimates are still given).

Usage: python benchmarks/characterize_report.py --json-dir DIR [--figures docs/figures]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dse.characterize_plots import task_title, write_sweep_plots

ARC = "dse_arc_easy"


def _ci(point: dict[str, Any], task: str | None = None) -> tuple[float, float, float]:
    """``(drop, low, high)`` in pp: the mean over tasks, or one task's."""
    if task is None:
        low, high = point["drop_ci_pp"]
        return point["accuracy_drop_pp"], low, high
    rec = point["per_task"][task]
    low, high = rec["drop_ci_pp"]
    return rec["drop_pp"], low, high


def _fmt(point: dict[str, Any], task: str | None = None) -> str:
    drop, low, high = _ci(point, task)
    return f"{drop:.1f} [{low:.1f}, {high:.1f}]"


def verdict(bigger: dict[str, Any], smaller: dict[str, Any], task: str | None = None) -> str:
    """Does ``bigger`` drop more than ``smaller``, with non-overlapping intervals?"""
    b, b_low, b_high = _ci(bigger, task)
    s, s_low, s_high = _ci(smaller, task)
    if b_low > s_high:
        return "holds"
    if s_low > b_high:
        return "does not hold (the opposite, with separate intervals)"
    return f"not decided (point estimates {'agree' if b > s else 'disagree'}; intervals overlap)"


def _load(json_dir: Path, sweep: str) -> dict[str, Any] | None:
    path = json_dir / f"characterize-{sweep}.json"
    if not path.exists() or not path.stat().st_size:
        return None
    return json.loads(path.read_text())


def _table(result: dict[str, Any]) -> list[str]:
    tasks = result["tasks"]
    ratios = any(p.get("latency_ratio") is not None for p in result["points"])
    head = ["point", "layers (0-based)", "tensors", "rank", "params −%", "mean drop pp [95 % CI]",
            *[f"{task_title(t)} acc. [95 % CI]" for t in tasks]]
    if ratios:
        head += ["latency", "energy", "memory"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in result["points"]:
        if not p.get("measured"):
            lines.append(f"| {p['label']} | not measured yet |" + " |" * (len(head) - 2))
            continue
        layers = ",".join(map(str, p["layers"])) if len(p["layers"]) <= 12 else f"{len(p['layers'])} layers"
        tensors = "all" if len(p["tensors"]) == 7 else ",".join(p["tensors"])
        accs = []
        for t in tasks:
            rec = p["per_task"][t]
            low, high = rec["accuracy_ci"]
            accs.append(f"{rec['accuracy']:.3f} [{low:.2f}, {high:.2f}]")
        row = [p["label"], layers, tensors, str(p["rank"]), f"{p['param_reduction_pct']:.1f}", _fmt(p), *accs]
        if ratios:
            row += [f"{p[k]:.3f}" if p.get(k) is not None else "—" for k in ("latency_ratio", "energy_ratio",
                                                                             "memory_ratio")]
        lines.append("| " + " | ".join(row) + " |")
    base = result["baseline"]["per_task"] or {}
    lines.append("")
    lines.append("Original model: " + ", ".join(f"{task_title(t)} {base[t]:.3f}" for t in tasks if t in base)
                 + f" ({result['limit']} documents per task).")
    return lines


def _measured(result: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [p for p in (result or {}).get("points", []) if p.get("measured")]


def check_layers(result: dict[str, Any]) -> list[str]:
    """Obs. 3: the first two layers hurt most; the last three cost about 3 pp."""
    pts = _measured(result)
    if not {0, 1, 2} <= {p["layers"][0] for p in pts}:
        return ["- Obs. 3: layers 0, 1 and some later layer not measured yet; not checked."]
    out = [f"- {len(pts)} of {len(result['points'])} layers measured; the comparison uses those."]
    ranked = sorted(pts, key=lambda p: -p["accuracy_drop_pp"])
    order = [p["layers"][0] for p in ranked]
    others = [p for p in pts if p["layers"][0] >= 2]
    median_other = statistics.median(p["accuracy_drop_pp"] for p in others)
    for layer in (0, 1):
        p = next(q for q in pts if q["layers"] == [layer])
        drop, low, _ = _ci(p)
        rel = 100 * drop / p["baseline_accuracy"] / 100 if p["baseline_accuracy"] else float("nan")
        state = "holds" if low > median_other else "not decided"
        out.append(f"- Obs. 3, layer {layer}: mean drop {_fmt(p)} pp ({rel:.0f} % of the original accuracy), "
                   f"rank {order.index(layer) + 1} of {len(pts)} by drop; the median drop of layers 2–"
                   f"{max(p['layers'][0] for p in others)} is {median_other:.1f} pp → {state} "
                   f"(its interval lies above that median: {'yes' if low > median_other else 'no'}).")
    last = [p for p in pts if p["layers"][0] >= len(result["points"]) - 3]
    if last:
        out.append("- The last three layers (paper: about 3 % lost): " + "; ".join(
            f"layer {p['layers'][0]}: {_fmt(p)} pp" for p in last) + ".")
    out.append("- Most harmful five: " + ", ".join(f"layer {p['layers'][0]} ({p['accuracy_drop_pp']:.1f} pp)"
                                                    for p in ranked[:5]) + ".")
    return out


def check_distance(result: dict[str, Any]) -> list[str]:
    """Obs. 4: closer layers hurt more (ARC-Easy 62 % → 29 % from distance 6 to 1)."""
    pts = {int(p["x"]): p for p in _measured(result)}
    if 1 not in pts or 6 not in pts:
        return ["- Obs. 4: distances 1 and 6 not both measured yet; not checked."]
    out = [f"- Obs. 4, mean over tasks: distance 1 {_fmt(pts[1])} pp vs distance 6 {_fmt(pts[6])} pp → "
           f"{verdict(pts[1], pts[6])}."]
    for task in result["tasks"]:
        out.append(f"  - {task_title(task)}: distance 1 {_fmt(pts[1], task)} vs 6 {_fmt(pts[6], task)} → "
                   f"{verdict(pts[1], pts[6], task)}.")
    return out


def check_tensors(result: dict[str, Any]) -> list[str]:
    """Obs. 1: within attention (q, k, v, o) and within the MLP (gate, up, down) tensors are equally sensitive."""
    pts = {p["tensors"][0]: p for p in _measured(result)}
    out = []
    for group, names in (("attention", ("q", "k", "v", "o")), ("MLP", ("gate", "up", "down"))):
        got = [pts[n] for n in names if n in pts]
        if len(got) < len(names):
            out.append(f"- Obs. 1, {group}: not all measured yet.")
            continue
        lows = [_ci(p)[1] for p in got]
        highs = [_ci(p)[2] for p in got]
        overlap = max(lows) <= min(highs)
        out.append(f"- Obs. 1, {group}: " + ", ".join(f"{p['tensors'][0]} {_fmt(p)}" for p in got)
                   + " pp → " + ("holds (all intervals share a value)" if overlap
                                 else "does not hold (two intervals are apart)") + ".")
    return out


def check_groups(result: dict[str, Any]) -> list[str]:
    """Obs. 2: at equal reduction, one tensor in many layers hurts more than all tensors in few layers."""
    pts = _measured(result)
    many = {p["label"]: p for p in pts if p["series"] == "one tensor type in all layers"}
    few = {p["label"].split("-equivalent")[0]: p for p in result["points"]
           if p["series"] == "all tensors in few layers" and p.get("measured")}
    out = []
    for name, p in many.items():
        q = few.get(name)
        if q is None:
            continue
        out.append(f"- Obs. 2, {name} in all layers ({p['param_reduction_pct']:.1f} %): {_fmt(p)} pp vs all tensors "
                   f"in {len(q['layers'])} layer(s) ({q['param_reduction_pct']:.1f} %): {_fmt(q)} pp "
                   f"→ {verdict(p, q)}.")
    return out or ["- Obs. 2: not measured yet."]


def check_rank(result: dict[str, Any]) -> list[str]:
    """Heuristic 1 (Fig. 5): the rank hardly matters (within 1.5 %)."""
    out = []
    for series in dict.fromkeys(p["series"] for p in result["points"]):
        pts = [p for p in _measured(result) if p["series"] == series]
        if len(pts) < 2:
            continue
        drops = [p["accuracy_drop_pp"] for p in pts]
        overlap = max(_ci(p)[1] for p in pts) <= min(_ci(p)[2] for p in pts)
        spread = max(drops) - min(drops)
        state = ("holds" if spread <= 1.5 else "not decided (intervals overlap)" if overlap
                 else "does not hold (two intervals are apart)")
        out.append(f"- Fig. 5, {series}: drops " + ", ".join(f"r={p['rank']}: {p['accuracy_drop_pp']:.1f}" for p in pts)
                   + f" pp; spread {spread:.1f} pp (paper: ≤ 1.5 %) → {state}.")
    return out or ["- Fig. 5: not measured yet."]


def check_case_study(result: dict[str, Any]) -> list[str]:
    """Sec. IV: ARC-Easy −7.4 pp per 1 % below 10 %; 0.5 % latency/energy per 1 % of parameters."""
    pts = _measured(result)
    out = []
    if ARC in result["tasks"]:
        small = [p for p in pts if p["param_reduction_pct"] < 10]
        if small:
            slopes = [_ci(p, ARC)[0] / p["param_reduction_pct"] for p in small]
            lows = [_ci(p, ARC)[1] / p["param_reduction_pct"] for p in small]
            highs = [_ci(p, ARC)[2] / p["param_reduction_pct"] for p in small]
            inside = all(lo <= 7.4 <= hi for lo, hi in zip(lows, highs, strict=True))
            out.append("- ARC-Easy pp lost per 1 % of parameters below 10 % (paper 7.4): " + "; ".join(
                f"{p['label']} ({p['param_reduction_pct']:.1f} %): {s:.2f} [{lo:.2f}, {hi:.2f}]"
                for p, s, lo, hi in zip(small, slopes, lows, highs, strict=True))
                + " → " + ("consistent (7.4 inside every interval)" if inside
                           else "does not hold (7.4 outside an interval)") + ".")
    for key, name in (("latency_ratio", "latency"), ("energy_ratio", "energy"), ("memory_ratio", "memory")):
        xs = [p["param_reduction_pct"] for p in pts if p.get(key) is not None]
        ys = [100 * (1 - p[key]) for p in pts if p.get(key) is not None]
        if len(xs) >= 2:
            slope = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)
            resid = statistics.pstdev([y - slope * x for x, y in zip(xs, ys, strict=True)])
            paper = 0.4 if name == "memory" else 0.5
            out.append(f"- {name}: {slope:.2f} % less per 1 % of parameters (least squares through the origin over "
                       f"{len(xs)} rows, residual spread {resid:.1f} %; paper {paper}).")
    return out or ["- Case study: not measured yet."]


CHECKS = {"layers": check_layers, "distance": check_distance, "tensors": check_tensors, "groups": check_groups,
          "rank": check_rank, "case-study": check_case_study}


def main() -> None:
    """Print the markdown of every sweep found in ``--json-dir``; write figures when asked."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-dir", type=Path, required=True)
    parser.add_argument("--figures", type=Path, default=None)
    args = parser.parse_args()
    for sweep, check in CHECKS.items():
        result = _load(args.json_dir, sweep)
        if result is None:
            print(f"### {sweep}\n\nNot measured.\n")
            continue
        if args.figures is not None:
            write_sweep_plots(result, args.figures)
        print(f"### {sweep} (study `{result['study']}`)\n")
        print("\n".join(_table(result)))
        print()
        print("\n".join(check(result)))
        print()


if __name__ == "__main__":
    main()
