"""Measure every γ of a gridded ``profile`` space once, for the search-efficiency replay.

The space is the keep-ratio ``profile`` encoding (docs/study.md) on every layer, the
methods svd-llm and asvd, its two floats on a grid (``keep`` in steps of ``--keep-step``
from ``--keep-min`` to 1, ``slope`` in steps of ``--slope-step`` over [-1, 1]): a few
hundred γ, each measured once and written to a JSON table that
``benchmarks/bench_search.py --table`` replays without measuring again. The Table IV
rows (rank 1, whole layers, scaled to the model by the engine's default rules) are
measured the same way, as the paper's seeded configurations to compare against.

Fidelity (cheap but real): the mean per-token NLL increase over the undecomposed model
on the first ``--tokens`` tokens of WikiText-2 *test* (one window, so ``exp(ΔNLL)`` is
the perplexity ratio on those tokens), paired token by token with the baseline; its
standard error comes from ``--block``-token blocks (tokens within a block are
correlated). The calibration of svd-llm/asvd uses the validation split. Parameter
reductions are counted exactly; EDP is left to the replay (the engine's stand-in from
the paper's slopes). Resumable: γ already in ``--out`` are not measured again.

Usage (about 45 minutes on one core shared with other jobs; a complete table: nothing to do):
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_search_measure.py --out docs/results/bench_search_profile.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from space.config import DecompositionConfig


def grid(low: float, high: float, step: float) -> list[float]:
    """``low, low + step, …, high`` rounded to the step's decimals (``high - low`` a multiple of ``step``)."""
    count = round((high - low) / step)
    if count < 0 or not math.isclose(low + count * step, high, abs_tol=1e-9):
        raise SystemExit(f"the grid {low}..{high} is not a whole number of steps of {step}")
    digits = max(0, -math.floor(math.log10(step)) + 1)
    return [round(low + i * step, digits) for i in range(count + 1)]


def token_nll(model: Any, ids: Any) -> Any:
    """Per-token negative log-likelihood (nats) of ``ids[1:]`` given the preceding tokens."""
    import torch

    with torch.no_grad():
        logits = model(ids.unsqueeze(0)).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")


def paired(nll: Any, base: Any, block: int) -> tuple[float, float]:
    """Mean NLL increase and its standard error over blocks of ``block`` tokens."""
    diff = (nll - base).tolist()
    blocks = [statistics.fmean(diff[i:i + block]) for i in range(0, len(diff) - block + 1, block)]
    return statistics.fmean(diff), statistics.stdev(blocks) / math.sqrt(len(blocks))


def main() -> None:
    """Measure the grid and the Table IV rows; write the table after every γ."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="svd-llm,svd")
    parser.add_argument("--keep-min", type=float, default=0.5)
    parser.add_argument("--keep-step", type=float, default=0.05)
    parser.add_argument("--slope-step", type=float, default=0.25)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--block", type=int, default=16)
    parser.add_argument("--calibration-sequences", type=int, default=4)
    parser.add_argument("--cache-dir", default=None, help="factor and calibration cache (default $DSE_CACHE_DIR)")
    parser.add_argument("--out", type=Path, default=Path("docs/results/bench_search_profile.json"),
                        help="the table (default: the one docs/performance.md reports; complete: nothing to do)")
    args = parser.parse_args()
    if _complete(args):
        print(f"{args.out} already holds every γ of this grid; delete it (or choose another --out) to remeasure")
        return

    import torch

    from dse.cache import FactorCache
    from dse.calibration import CalibrationSettings
    from dse.calibration_store import load_or_collect
    from dse.models import load_model
    from dse.study.encoding import make_encoding, paper_configs
    from dse.study.search_space import build_search_space
    from dse.surgery import decomposed
    from objectives.perplexity import wikitext2_test_text
    from space.env import resolve_data_dir
    from space.metrics import parameter_report

    torch.set_num_threads(1)
    methods = tuple(args.methods.split(","))
    loaded = load_model(args.model)
    spec = loaded.spec
    space = build_search_space(spec, {}, methods=methods, keep_min=args.keep_min, model=args.model)
    encoding = make_encoding("profile", space)
    data_dir = resolve_data_dir(None)
    if data_dir is None:
        raise SystemExit("no benchmark data directory: set DSE_DATA_DIR")
    ids = loaded.tokenizer(wikitext2_test_text(data_dir), return_tensors="pt").input_ids[0][: args.tokens]
    settings = CalibrationSettings(sequences=args.calibration_sequences, length=512)
    loaded.calibration, _ = load_or_collect(loaded, settings, cache_dir=args.cache_dir, progress=False)
    # Both methods' factors of every tensor at full rank: later γ slice them (nested), instead of
    # each higher rank replacing a lower one in the cache with a new decomposition.
    cache = FactorCache.for_cache_dir(args.cache_dir, memory_bytes=len(methods) * 1024**3)
    for method in methods:
        started = time.perf_counter()
        full = DecompositionConfig(layers=space.layers, tensors="all", rank=None, method=method, two_factor=True,
                                   ranks={f"{layer}:{t.name}": t.rank for layer in space.layers for t in spec.tensors})
        with decomposed(loaded, full, cache=cache):
            pass
        print(f"{method}: factors of every tensor at full rank in {time.perf_counter() - started:.0f} s", flush=True)
    base = token_nll(loaded.model, ids)
    header = {
        "model": args.model, "fingerprint": loaded.fingerprint, "encoding": "profile", "methods": list(methods),
        "keep": grid(args.keep_min, 1.0, args.keep_step), "slope": grid(-1.0, 1.0, args.slope_step),
        "fidelity": (f"mean per-token NLL increase (nats) over the undecomposed model on the first {len(ids)} "
                     f"tokens of WikiText-2 test, one window; standard error over {args.block}-token blocks"),
        "calibration": settings.model_dump(), "baseline_nll": float(base.mean()),
        "baseline_ppl": math.exp(float(base.mean())),
    }
    table: dict[str, Any] = {"points": [], "paper": []}
    if args.out.is_file():
        table = json.loads(args.out.read_text())
        if table.get("fingerprint") != loaded.fingerprint or table.get("keep") != header["keep"]:
            raise SystemExit(f"{args.out} holds another model or grid; choose another --out")
    table |= header
    done = {(p["method"], p["keep"], p["slope"]) for p in table["points"]}
    by_hash = {p["hash"]: p for p in table["points"]}

    def measure(gamma: DecompositionConfig) -> dict[str, Any]:
        started = time.perf_counter()
        with decomposed(loaded, gamma, cache=cache):
            nll = token_nll(loaded.model, ids)
        delta, se = paired(nll, base, args.block)
        report = parameter_report(spec, gamma)
        return {"delta_nll": delta, "se": se, "ppl_ratio": math.exp(delta),
                "param_reduction_pct": report.param_reduction_pct, "seconds": time.perf_counter() - started}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(table, indent=1))

    seeds, _ = paper_configs(make_encoding("gaps", build_search_space(spec, _default_rules())), limit=10)
    measured_paper = {p["label"] for p in table["paper"]}
    for config in seeds:
        if config.label not in measured_paper:
            table["paper"].append({"label": config.label, "layers": list(config.gamma.layers),
                                   **measure(config.gamma)})
            save()
            print(f"{config.label}: ΔNLL {table['paper'][-1]['delta_nll']:.3f}", flush=True)
    cells = [(m, k, s) for m in methods for k in header["keep"] for s in header["slope"]]
    for n, (method, keep, slope) in enumerate(cells, start=1):
        if (method, keep, slope) in done:
            continue
        gamma = encoding.decode({"keep": keep, "slope": slope, "method": method})
        key = gamma.hash(spec) if gamma.layers else "empty"
        if key in by_hash:
            values = {k: by_hash[key][k] for k in ("delta_nll", "se", "ppl_ratio", "param_reduction_pct")}
            values["seconds"] = 0.0
        elif not gamma.layers:
            values = {"delta_nll": 0.0, "se": 0.0, "ppl_ratio": 1.0, "param_reduction_pct": 0.0, "seconds": 0.0}
        else:
            values = measure(gamma)
        point = {"method": method, "keep": keep, "slope": slope, "hash": key, "label": gamma.describe(spec), **values}
        table["points"].append(point)
        by_hash.setdefault(key, point)
        save()
        print(f"[{n}/{len(cells)}] {method} keep {keep} slope {slope}: −{values['param_reduction_pct']:.1f} % "
              f"ΔNLL {values['delta_nll']:.3f} ± {values['se']:.3f} ({values['seconds']:.1f} s)", flush=True)


def _complete(args: argparse.Namespace) -> bool:
    """Whether ``--out`` already holds every cell of the requested grid (then no model is loaded)."""
    if not args.out.is_file():
        return False
    table = json.loads(args.out.read_text())
    cells = {(p["method"], p["keep"], p["slope"]) for p in table.get("points", [])}
    methods = args.methods.split(",")
    wanted = {(m, k, s) for m in methods for k in grid(args.keep_min, 1.0, args.keep_step)
              for s in grid(-1.0, 1.0, args.slope_step)}
    return table.get("methods") == methods and wanted <= cells and bool(table.get("paper"))


def _default_rules() -> dict[str, Any]:
    from dse.study.definition import StudyDefinition

    return dict(StudyDefinition().rules)


if __name__ == "__main__":
    main()
