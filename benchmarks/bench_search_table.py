"""Search efficiency on a measured landscape: replay samplers against a table of γ measured once each.

The table is ``benchmarks/bench_search_measure.py``'s output: every grid point of the
keep-ratio ``profile`` encoding (method × ``keep`` × ``slope``) with its measured
perplexity increase (ΔNLL, nats per token, with a standard error) and parameter
reduction. A trial's objective is the EDP the engine's stand-in predicts from the
parameter reduction (the paper's slopes, ``dse.study.goals.standin_ratios``; labelled so),
its constraint ``ΔNLL < τ``. Each sampler runs the study loop (ask, decode through the
engine's encoding with the floats on the measured grid, tell the recorded value and the
constraint) for ``--seeds`` seeds; a run ends when it proposes a γ with the best
feasible EDP. A repeated γ is a trial but no new measurement (the engine's memo), so
both counts are reported. τ is given as perplexity ratios (``exp(τ)``), several at once.

Usage:
    python benchmarks/bench_search_table.py --table docs/results/bench_search_profile.json \
        --ppl-ratios 1.1,1.25,1.5,2 --seeds 20 --budget 400 --json docs/results/bench_search_replay.json \
        --figure docs/figures/search-profile.png
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import textwrap
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dse.study.encoding import Param
from dse.study.encoding_ratios import ProfileEncoding
from dse.study.goals import CONSTRAINT_KEY, constraint_value, standin_ratios

#: The engine's samplers and the variants tried against its default (TPE).
SAMPLER_NAMES = ("tpe", "random", "nsga2", "gp", "tpe-independent", "tpe-startup5", "tpe-group")


class GridProfile(ProfileEncoding):
    """The engine's ``profile`` encoding with ``keep`` and ``slope`` on the measured grid."""

    def __init__(self, space: Any, keep_step: float, slope_step: float) -> None:
        super().__init__(space)
        self.keep_step, self.slope_step = keep_step, slope_step

    def params(self) -> list[Param]:
        steps = {"keep": self.keep_step, "slope": self.slope_step}
        return [Param(p.name, p.kind, p.low, p.high, p.log, p.choices, steps.get(p.name)) for p in super().params()]


def grid_encoding(data: Mapping[str, Any]) -> GridProfile:
    """The profile encoding over the table's model, methods and grid (steps rounded: 0.55 − 0.5 ≠ 0.05)."""
    from dse.study.search_space import build_search_space
    from space.presets import load_spec

    space = build_search_space(load_spec(data["model"]), {}, methods=tuple(data["methods"]), keep_min=data["keep"][0])
    keep, slope = data["keep"], data["slope"]
    return GridProfile(space, round(keep[1] - keep[0], 6), round(slope[1] - slope[0], 6))


def key(method: str, keep: float, slope: float) -> tuple[str, float, float]:
    """A grid cell's key, robust to the float noise of stepped suggestions."""
    return method, round(float(keep), 4), round(float(slope), 4)


class Table:
    """The measured grid: cell → record, and the best feasible EDP at a τ (nats)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.cells = {key(p["method"], p["keep"], p["slope"]): dict(p) for p in data["points"]}
        for record in self.cells.values():
            record["edp"] = standin_ratios(float(record["param_reduction_pct"]))["edp_ratio"]
        expected = len(data["methods"]) * len(data["keep"]) * len(data["slope"])
        if len(self.cells) != expected:
            raise ValueError(f"the table holds {len(self.cells)} of the grid's {expected} cells; measure the rest")

    def optimum(self, tau: float) -> dict[str, Any]:
        """The best feasible EDP, the cells reaching it, and how many cells' feasibility is within 2 SE of τ."""
        feasible = [r for r in self.cells.values() if r["delta_nll"] < tau]
        if not feasible:
            raise ValueError(f"no cell is feasible at τ = {tau:.3f} nats")
        best = min(r["edp"] for r in feasible)
        optimal = [r for r in feasible if r["edp"] <= best + 1e-12]
        ambiguous = [r for r in self.cells.values() if abs(r["delta_nll"] - tau) < 2 * r["se"]]
        better_unsure = [r for r in ambiguous if r["edp"] < best - 1e-12]
        return {"tau_nll": tau, "ppl_ratio": math.exp(tau), "n_cells": len(self.cells), "n_feasible": len(feasible),
                "best_edp": best, "best_reduction_pct": optimal[0]["param_reduction_pct"],
                "optimal": [{k: r[k] for k in ("method", "keep", "slope", "delta_nll", "se")} for r in optimal],
                "n_within_2se_of_tau": len(ambiguous), "n_better_within_2se": len(better_unsure)}


def make_study_sampler(name: str, seed: int, budget: int) -> Any:
    """The engine's sampler ``name``, or a TPE variant (``tpe-independent``, ``tpe-startup5``, ``tpe-group``)."""
    import warnings

    import optuna

    from dse.study.samplers import make_sampler

    if not name.startswith("tpe-"):
        return make_sampler(name, seed=seed, n_trials=budget, n_startup_trials=None, multi_objective=False)
    variants: dict[str, dict[str, Any]] = {"tpe-independent": {"multivariate": False},
                                           "tpe-startup5": {"multivariate": True, "n_startup_trials": 5},
                                           "tpe-group": {"multivariate": True, "group": True}}
    options = dict(variants[name])
    options.setdefault("n_startup_trials", max(2, min(10, budget // 3)))  # the engine's rule (samplers._startup)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, **options)


def replay(sampler: Any, encoding: GridProfile, table: Table, tau: float, budget: int,
           best_edp: float) -> dict[str, Any]:
    """One study against the table: trials (and distinct γ) until the best feasible EDP is proposed."""
    import optuna

    study = optuna.create_study(direction="minimize", sampler=sampler)
    seen: set[tuple[str, float, float]] = set()
    for number in range(1, budget + 1):
        trial = study.ask()
        encoding.suggest(trial)  # the engine's decode runs (a γ it rejects would raise)
        params = trial.params
        cell = key(params.get("method", encoding.methods[0]), params["keep"], params["slope"])
        record = table.cells[cell]
        seen.add(cell)
        trial.set_constraint(CONSTRAINT_KEY, constraint_value(record["delta_nll"], tau))
        study.tell(trial, record["edp"])
        if record["delta_nll"] < tau and record["edp"] <= best_edp + 1e-12:
            return {"trials": number, "distinct": len(seen)}
    return {"trials": None, "distinct": len(seen)}


def summary(values: list[int | None], budget: int) -> dict[str, Any]:
    """Median, quartiles and max, a run that never found the optimum counted as ``budget + 1``."""
    censored = [v if v is not None else budget + 1 for v in values]
    q25, _, q75 = statistics.quantiles(censored, n=4) if len(censored) > 1 else censored * 3  # one seed: no spread
    return {"found": sum(v is not None for v in values), "median": statistics.median(censored),
            "q25": q25, "q75": q75, "max": max(censored)}


def equal_reduction(table: Table) -> list[dict[str, Any]]:
    """Each Table IV row against the least-damaging grid cell that removes at least as many parameters."""
    rows = []
    for paper in table.data.get("paper", []):
        at_least = [r for r in table.cells.values() if r["param_reduction_pct"] >= paper["param_reduction_pct"]]
        if not at_least:
            continue
        best = min(at_least, key=lambda r: r["delta_nll"])
        rows.append({"paper": paper["label"], "paper_reduction_pct": paper["param_reduction_pct"],
                     "paper_delta_nll": paper["delta_nll"], "paper_se": paper["se"],
                     "best": {k: best[k] for k in ("method", "keep", "slope", "param_reduction_pct", "delta_nll",
                                                   "se")}})
    return rows


def run(table: Table, taus: list[float], samplers: list[str], seeds: int, budget: int,
        progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Every sampler at every τ over ``seeds`` seeds; the heuristic and the equal-reduction rows."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = table.data
    encoding = grid_encoding(data)
    results: dict[str, Any] = {"source": data["fidelity"], "model": data["model"], "budget": budget, "seeds": seeds,
                               "taus": [], "equal_reduction": equal_reduction(table)}
    for tau in taus:
        best = table.optimum(tau)
        entry: dict[str, Any] = {**best, "samplers": {}}
        paper = sorted(data.get("paper", []), key=lambda p: p["param_reduction_pct"])
        feasible_rows = [p for p in paper if p["delta_nll"] < tau]
        entry["heuristic"] = feasible_rows[-1] if feasible_rows else None
        progress(f"τ = {tau:.3f} nats (ppl ×{math.exp(tau):.2f}): {best['n_feasible']}/{best['n_cells']} cells "
                 f"feasible; best EDP {best['best_edp']:.4f} (−{best['best_reduction_pct']:.1f} % parameters) "
                 f"in {len(best['optimal'])} cell(s)")
        for name in samplers:
            started = time.perf_counter()
            runs = [replay(make_study_sampler(name, seed, budget), encoding, table, tau, budget, best["best_edp"])
                    for seed in range(seeds)]
            stats = summary([r["trials"] for r in runs], budget)
            distinct = summary([r["distinct"] if r["trials"] is not None else None for r in runs], budget)
            entry["samplers"][name] = {"runs": runs, **stats, "distinct_median": distinct["median"],
                                       "seconds": time.perf_counter() - started}
            progress(f"  {name}: found {stats['found']}/{seeds}, trials median {stats['median']:g} "
                     f"[{stats['q25']:g}, {stats['q75']:g}], max {stats['max']}; distinct γ median "
                     f"{distinct['median']:g} ({time.perf_counter() - started:.0f} s)")
        results["taus"].append(entry)
    return results


def markdown(results: dict[str, Any]) -> str:
    """One row per τ and sampler: runs that found the optimum, trials median [IQR] and max, distinct γ."""
    lines = ["| τ (ppl ratio) | feasible γ | best: parameters removed | sampler | found (of "
             f"{results['seeds']}) | trials to the best: median [IQR], max | distinct γ: median | vs random |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in results["taus"]:
        random = entry["samplers"].get("random", {}).get("median")
        for name, s in entry["samplers"].items():
            ratio = f"{s['median'] / random:.2f}" if random else ""
            lines.append(f"| ×{entry['ppl_ratio']:.2f} | {entry['n_feasible']}/{entry['n_cells']} | "
                         f"{entry['best_reduction_pct']:.1f} % | {name} | {s['found']} | {s['median']:g} "
                         f"[{s['q25']:g}, {s['q75']:g}], {s['max']} | {s['distinct_median']:g} | {ratio} |")
    return "\n".join(lines)


def figure(results: dict[str, Any], path: Path) -> None:
    """Median trials to the best feasible EDP with IQR bars, per sampler and τ (PNG and SVG)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    taus = results["taus"]
    names = list(taus[0]["samplers"])
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        xs = [t + (i - (len(names) - 1) / 2) * width for t in range(len(taus))]
        s = [entry["samplers"][name] for entry in taus]
        med = [x["median"] for x in s]
        err = [[m - x["q25"] for m, x in zip(med, s, strict=True)], [x["q75"] - m for m, x in zip(med, s, strict=True)]]
        ax.errorbar(xs, med, yerr=err, fmt="o", ms=4, capsize=2, label=f"{name} (default)" if name == "tpe" else name)
    ax.axhline(results["budget"] + 1, color="tab:gray", ls="--", lw=0.8)
    ax.set_xticks(range(len(taus)),
                  [f"ppl ×{t['ppl_ratio']:.2f}\n{t['n_feasible']} feasible" for t in taus], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(top=(results["budget"] + 1) * 6)  # room for the legend above the bars
    ax.set_ylabel("trials to the best feasible EDP\n(median, IQR bars)")
    ax.set_title(f"{results['model']}: {taus[0]['n_cells']} γ of the profile space measured once; "
                 f"{results['seeds']} seeds; dashed: budget {results['budget']} (not found)", fontsize=8)
    ax.legend(fontsize=7, ncol=4, loc="upper left")
    note = (f"feasible: ΔNLL < τ, ΔNLL being the {results['source']}; "
            "EDP: stand-in from the parameter count (the paper's slopes)")
    fig.text(0.01, 0.01, textwrap.fill(note, 150), fontsize=6)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    fig.savefig(path.with_suffix(".svg"))
    plt.close(fig)


def _fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    """Parse, replay, print, write the JSON and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", type=Path, default=Path("docs/results/bench_search_profile.json"),
                        help="bench_search_measure.py's JSON (default: the one docs/performance.md reports)")
    parser.add_argument("--ppl-ratios", default="1.1,1.25,1.5,2", help="feasibility thresholds as perplexity ratios")
    parser.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    try:
        ratios = [float(x) for x in args.ppl_ratios.split(",")]
    except ValueError:
        _fail(f"--ppl-ratios takes numbers above 1 separated by commas, got {args.ppl_ratios!r}")
    if any(not r > 1.0 for r in ratios):
        _fail(f"--ppl-ratios must all be above 1, got {args.ppl_ratios!r}")
    unknown = sorted(set(args.samplers.split(",")) - set(SAMPLER_NAMES))
    if unknown:
        _fail(f"unknown sampler {unknown[0]!r}; allowed: {', '.join(SAMPLER_NAMES)}")
    if not args.table.is_file():
        _fail(f"--table {args.table} does not exist; run benchmarks/bench_search_measure.py first")
    try:
        table = Table(json.loads(args.table.read_text()))
        results = run(table, [math.log(r) for r in ratios], args.samplers.split(","), args.seeds, args.budget)
    except (ValueError, KeyError) as exc:
        _fail(f"{args.table}: {exc}")
    for row in results["equal_reduction"]:
        best = row["best"]
        print(f"{row['paper']}: −{row['paper_reduction_pct']:.1f} %, ΔNLL {row['paper_delta_nll']:.2f} "
              f"± {row['paper_se']:.2f}; best grid γ removing at least as much: {best['method']} keep {best['keep']} "
              f"slope {best['slope']} (−{best['param_reduction_pct']:.1f} %), ΔNLL {best['delta_nll']:.2f} "
              f"± {best['se']:.2f}")
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if args.figure:
        figure(results, args.figure)


if __name__ == "__main__":
    main()
