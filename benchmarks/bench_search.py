"""Search efficiency: how many trials each sampler needs to find the best feasible EDP.

Every γ of a compact space (the engine's default rules and ``gaps`` encoding, at most
``--max-layers`` layers) gets one recorded value; then TPE, GP, NSGA-II and random
search (the engine's own samplers, encoding and paper seeds) are replayed against the
recorded values over ``--seeds`` seeds, and the paper's heuristic choice is scored too.

The recorded values come from one of two sources, and the output says which:

``--measure MODEL``
    Every γ measured once through the engine (``dse.characterize_runs``: one study of
    fixed γ, memoized in ``--storage``), accuracy on ``--tasks``/``--limit``.
``--proxy LAYERS_JSON`` (what docs/performance.md used; SmolLM2 is too slow here)
    A stand-in built from a measured ``dse characterize MODEL --sweep layers --json``:
    a γ's accuracy drop is the sum of its layers' measured single-layer drops (an
    additive model: interactions between layers are ignored).

EDP is the measured ratio where the record has one, else the engine's stand-in from the
paper's slopes (``dse.study.goals.standin_ratios``), labelled as such.

Usage:
    python benchmarks/bench_search.py --proxy characterize-layers.json --tau 4 --seeds 20 --budget 120
    python benchmarks/bench_search.py --measure tiny-llama --tasks dse_arc_easy --limit 20 --tau 10
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dse.study.definition import StudyDefinition
from dse.study.encoding import (
    SearchSpace,
    build_search_space,
    check_gamma,
    make_encoding,
    paper_configs,
)
from dse.study.goals import standin_ratios
from dse.study.samplers import make_sampler
from space.config import DecompositionConfig
from space.metrics import parameter_report
from space.presets import load_spec

SAMPLER_NAMES = ("tpe", "gp", "nsga2", "random")


def compact_space(model: str, max_layers: int, rules: list[str]) -> tuple[StudyDefinition, SearchSpace]:
    """The engine's default study space (rules, ``gaps`` encoding) with at most ``max_layers`` layers.

    ``rules`` (``NAME=VALUE`` or ``NAME=off``) change the default rules, as ``--rule`` does.
    """
    from space.rules import RuleSet

    start = RuleSet(rules=dict(StudyDefinition().rules))
    parsed = RuleSet.parse(rules, start=start).rules if rules else start.rules
    chosen = {name: (True if value is None else value) for name, value in parsed.items()}
    definition = StudyDefinition.model_validate({"model": model, "rules": chosen, "search": {"max_layers": max_layers}})
    search = definition.search
    space = build_search_space(load_spec(model), definition.rules, min_layers=search.min_layers,
                               max_layers=search.max_layers, max_rank=search.max_rank)
    return definition, space


def all_gammas(space: SearchSpace) -> list[DecompositionConfig]:
    """Every γ of the space: layer sets of min..max layers at least min_gap apart."""
    out = []
    for n in range(space.min_layers, space.max_layers + 1):
        for layers in itertools.combinations(space.layers, n):
            if all(b - a >= space.min_gap for a, b in itertools.pairwise(layers)):
                for tensors in space.tensor_sets:
                    for rank in space.ranks:
                        names: Any = "all" if tensors == space.spec.tensor_names else tensors
                        gamma = DecompositionConfig(layers=layers, tensors=names, rank=rank)
                        if check_gamma(space, gamma) is None:
                            out.append(gamma)
    return out


def _edp(record: dict[str, Any], reduction: float) -> tuple[float, bool]:
    if record.get("edp_ratio") is not None:
        return float(record["edp_ratio"]), False
    return standin_ratios(reduction)["edp_ratio"], True


class Recorded:
    """γ → recorded value (``drop`` pp, ``edp``), and every layer set's value for the optimum."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self._edp_by_n: dict[int, tuple[float, bool]] = {}

    def edp_for(self, n_layers: int) -> tuple[float, bool]:
        """Stand-in EDP of n whole layers at rank 1 (every SmolLM2 layer holds as many parameters)."""
        if n_layers not in self._edp_by_n:
            step = self.space.min_gap
            layers = tuple(self.space.layers[: n_layers * step : step])
            gamma = DecompositionConfig(layers=layers, tensors="all", rank=self.space.ranks[0])
            self._edp_by_n[n_layers] = _edp({}, parameter_report(self.space.spec, gamma).param_reduction_pct)
        return self._edp_by_n[n_layers]

    def lookup(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        raise NotImplementedError

    def records(self) -> Any:
        """``(layers, drop, edp)`` of every recorded γ."""
        raise NotImplementedError


class ProxyTable(Recorded):
    """Additive stand-in from a measured layer sweep, computed on demand (see the module docstring)."""

    def __init__(self, space: SearchSpace, layers_json: Path) -> None:
        super().__init__(space)
        result = json.loads(layers_json.read_text())
        self.drops = {p["layers"][0]: float(p["accuracy_drop_pp"]) for p in result["points"] if p.get("measured")}
        missing = [layer for layer in space.layers if layer not in self.drops]
        if missing:
            raise SystemExit(f"{layers_json} lacks single-layer drops of layers {missing}")
        if space.tensor_sets != (space.spec.tensor_names,) or len(space.ranks) != 1:
            raise SystemExit("--proxy needs the whole-layers and rank-one rules (one tensor set, one rank)")

    def lookup(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        edp, standin = self.edp_for(len(gamma.layers))
        return {"label": gamma.describe(self.space.spec), "layers": list(gamma.layers),
                "drop": sum(self.drops[layer] for layer in gamma.layers), "edp": edp, "edp_standin": standin}

    def records(self) -> Any:
        space = self.space
        for n in range(space.min_layers, space.max_layers + 1):
            edp, _ = self.edp_for(n)
            for layers in itertools.combinations(space.layers, n):
                if all(b - a >= space.min_gap for a, b in itertools.pairwise(layers)):
                    yield layers, sum(self.drops[layer] for layer in layers), edp


class MeasuredTable(Recorded):
    """Every γ of the space measured once through the engine (a study of fixed γ, memoized)."""

    def __init__(self, space: SearchSpace, args: argparse.Namespace) -> None:
        from dse.characterize_api import sweep_definition
        from dse.characterize_runs import run_fixed_points
        from dse.characterize_sweeps import SweepPoint

        super().__init__(space)
        gammas = all_gammas(space)
        points = [SweepPoint(gamma=g, series="space", x=i, label=g.describe(space.spec)) for i, g in enumerate(gammas)]
        definition = sweep_definition(args.measure, "search-space", points, space.spec,
                                      tasks=args.tasks.split(","), limit=args.limit, storage=args.storage,
                                      efficiency=args.efficiency)
        _, rows = run_fixed_points(definition, gammas, sweep="search-space", progress=True)
        self.table: dict[str, dict[str, Any]] = {}
        for gamma in gammas:
            row = rows.get(gamma.hash(space.spec))
            if row is not None:
                edp, standin = _edp(row, float(row["param_reduction_pct"]))
                self.table[gamma.hash(space.spec)] = {"label": gamma.describe(space.spec), "layers": list(gamma.layers),
                                                      "drop": float(row["accuracy_drop_pp"]), "edp": edp,
                                                      "edp_standin": standin}

    def lookup(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        return self.table.get(gamma.hash(self.space.spec))

    def records(self) -> Any:
        for record in self.table.values():
            yield tuple(record["layers"]), record["drop"], record["edp"]


def optimum(recorded: Recorded, tau: float) -> dict[str, Any]:
    """The best feasible EDP of the space and how many γ reach it."""
    n_total = n_feasible = n_optimal = 0
    best = float("inf")
    for _, drop, edp in recorded.records():
        n_total += 1
        if drop < tau:
            n_feasible += 1
            if edp < best - 1e-12:
                best, n_optimal = edp, 1
            elif abs(edp - best) <= 1e-12:
                n_optimal += 1
    return {"n_gammas": n_total, "n_feasible": n_feasible, "best_edp": best, "n_optimal": n_optimal}


def replay(sampler: str, seed: int, definition: StudyDefinition, space: SearchSpace, recorded: Recorded,
           tau: float, budget: int, best_edp: float) -> dict[str, Any]:
    """One study run against the recorded values, as the runner does it (paper seeds first)."""
    import optuna

    from dse.study.goals import CONSTRAINT_KEY, REJECTED_CONSTRAINT, constraint_value

    encoding = make_encoding(definition.search.encoding, space)
    study = optuna.create_study(direction="minimize", sampler=make_sampler(
        sampler, seed=seed, n_trials=budget, n_startup_trials=definition.search.n_startup_trials,
        multi_objective=False))
    seeds, _ = paper_configs(encoding, limit=definition.search.paper_seeds)
    for config in seeds:
        study.enqueue_trial(config.params)
    seen: set[tuple[int, ...]] = set()
    found_at = found_measured = None
    for number in range(1, budget + 1):
        trial = study.ask()
        gamma = encoding.suggest(trial)
        record = recorded.lookup(gamma) if check_gamma(space, gamma) is None else None
        if record is None:
            trial.set_constraint(CONSTRAINT_KEY, REJECTED_CONSTRAINT)
            study.tell(trial, 1.0)
            continue
        seen.add(tuple(gamma.layers))
        trial.set_constraint(CONSTRAINT_KEY, constraint_value(record["drop"], tau))
        study.tell(trial, record["edp"])
        if found_at is None and record["drop"] < tau and record["edp"] <= best_edp + 1e-12:
            found_at, found_measured = number, len(seen)
            break
    return {"trials": found_at, "measured": found_measured, "distinct": len(seen)}


def heuristic_choice(space: SearchSpace, definition: StudyDefinition, recorded: Recorded,
                     tau: float) -> dict[str, Any]:
    """The paper's recipe: its Table IV rows (scaled) by growing reduction; the last feasible one."""
    encoding = make_encoding(definition.search.encoding, space)
    seeds, _ = paper_configs(encoding, limit=10)
    chosen, tried = None, 0
    for config in seeds:
        record = recorded.lookup(config.gamma)
        if record is None:
            continue
        tried += 1
        if record["drop"] < tau:
            chosen = record
        else:
            break
    return {"chosen": chosen, "trials": tried, "rows": [c.label for c in seeds]}


def _summary(values: list[int | None], budget: int) -> dict[str, Any]:
    hits = sorted(v for v in values if v is not None)
    censored = [v if v is not None else budget + 1 for v in values]
    # One seed has no spread: its quartiles are its value.
    q25, _, q75 = statistics.quantiles(censored, n=4) if len(censored) > 1 else censored * 3
    return {"found": f"{len(hits)}/{len(values)}", "median": statistics.median(censored),
            "q25": q25, "q75": q75, "max": max(censored)}


def main() -> None:
    """Record the space, replay every sampler over the seeds, print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--proxy", type=Path, help="a `dse characterize MODEL --sweep layers --json` output")
    source.add_argument("--measure", metavar="MODEL", help="measure every γ of the space on MODEL")
    parser.add_argument("--model", default="smollm2-135m", help="the model of --proxy")
    parser.add_argument("--tasks", default="dse_arc_easy")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--storage", default="sqlite:///bench_search.db")
    parser.add_argument("--efficiency", action="store_true", help="measure latency/energy (else stand-in EDP)")
    parser.add_argument("--max-layers", type=int, default=3)
    parser.add_argument("--rule", action="append", default=[], metavar="NAME=VALUE",
                        help="change a default rule, e.g. skip-late=12 (repeatable)")
    parser.add_argument("--tau", type=float, default=4.0)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=120)
    parser.add_argument("--samplers", default=",".join(SAMPLER_NAMES))
    parser.add_argument("--figure", type=Path, default=None, help="write a PNG of trials-to-best per sampler")
    parser.add_argument("--json", type=Path, default=None, help="write the raw results here")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    model = args.measure or args.model
    definition, space = compact_space(model, args.max_layers, args.rule)
    recorded: Recorded = ProxyTable(space, args.proxy) if args.proxy else MeasuredTable(space, args)
    values = (f"additive stand-in from {args.proxy.name} (measured single-layer drops)" if args.proxy
              else f"measured on {model}, {args.tasks} × {args.limit} documents")
    best = optimum(recorded, args.tau)
    if best["n_feasible"] == 0:
        raise SystemExit(f"no γ of the space is feasible at τ = {args.tau}")
    print(f"space: {model}, rules {', '.join(space.rules.labels())}, encoding {definition.search.encoding}, "
          f"{space.min_layers}..{space.max_layers} layers: {best['n_gammas']} γ; values: {values}")
    edp_source = "stand-in from the paper slopes" if args.proxy or not args.efficiency else "measured"
    print(f"τ = {args.tau} pp: {best['n_feasible']} feasible γ; the best feasible EDP {best['best_edp']:.4f} "
          f"is reached by {best['n_optimal']} γ (EDP: {edp_source})")
    results: dict[str, Any] = {"source": values, **best, "tau": args.tau, "budget": args.budget,
                               "max_layers": args.max_layers, "samplers": {}}
    print(f"\n| sampler | runs that found it (of {args.seeds}) | trials to the best: median [IQR], max | "
          f"distinct γ measured by then: median | seconds |")
    print("|---|---|---|---|---|")
    for name in args.samplers.split(","):
        started = time.perf_counter()
        runs = [replay(name, seed, definition, space, recorded, args.tau, args.budget, best["best_edp"])
                for seed in range(args.seeds)]
        summary = _summary([r["trials"] for r in runs], args.budget)
        measured = statistics.median([r["measured"] if r["measured"] is not None else r["distinct"] for r in runs])
        seconds = time.perf_counter() - started
        results["samplers"][name] = {"runs": runs, **summary, "median_measured": measured, "seconds": seconds}
        print(f"| {name} | {summary['found']} | {summary['median']:g} [{summary['q25']:g}, {summary['q75']:g}], "
              f"{summary['max']} | {measured:g} | {seconds:.0f} |", flush=True)
    heuristic = heuristic_choice(space, definition, recorded, args.tau)
    results["heuristic"] = heuristic
    chosen = heuristic["chosen"]
    print("\npaper's heuristic (Table IV rows by growing reduction, the last feasible one): "
          + (f"{chosen['label']}, drop {chosen['drop']:.2f} pp, EDP {chosen['edp']:.4f}, "
             f"after {heuristic['trials']} trials"
             if chosen else f"no feasible row among the {heuristic['trials']} tried"))
    print("\nthe best γ at each paper seed's reduction (as many whole layers):")
    seeds, _ = paper_configs(make_encoding(definition.search.encoding, space), limit=10)
    rows = []
    for config in seeds:
        record = recorded.lookup(config.gamma)
        if record is None:
            continue
        n = len(config.gamma.layers)
        same = [(layers, drop) for layers, drop, _ in recorded.records() if len(layers) == n]
        if not same:
            continue
        layers, drop = min(same, key=lambda item: item[1])
        rows.append({"seed": config.label, "seed_drop": record["drop"], "best_layers": list(layers), "best_drop": drop,
                     "n_same": len(same)})
        print(f"- {config.label}: drop {record['drop']:.2f} pp; best of {len(same)} γ with {n} layers: "
              f"L{list(layers)} at {drop:.2f} pp ({record['drop'] - drop:.2f} pp less)")
    results["equal_reduction"] = rows
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if args.figure:
        _figure(results, args)


def _figure(results: dict[str, Any], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = list(results["samplers"])
    data = [[r["trials"] if r["trials"] is not None else args.budget + 1 for r in results["samplers"][n]["runs"]]
            for n in names]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), names)
    for i, values in enumerate(data, start=1):
        ax.scatter([i] * len(values), values, s=8, alpha=0.5, color="tab:blue")
    if results["heuristic"]["chosen"] is not None:
        ax.axhline(results["heuristic"]["trials"], color="tab:red", ls=":", label="paper's heuristic: trials used")
        ax.legend(fontsize=7)
    ax.axhline(args.budget + 1, color="tab:gray", ls="--", lw=0.8)
    ax.set_ylabel("trials to the best feasible EDP")
    ax.set_title(f"{results['n_gammas']} γ (1..{results['max_layers']} layers), τ = {args.tau} pp, "
                 f"{args.seeds} seeds; dashed: budget {args.budget} (not found)", fontsize=9)
    fig.text(0.01, 0.01, f"values: {results['source']}", fontsize=6)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
