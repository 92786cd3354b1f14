"""Decomposition methods on SmolLM2-135M at uniform kept-parameter ratios (prints figures).

Every decomposable tensor (q, k, v, o, gate, up, down of all 30 layers) is compressed
at the same keep ratio (rank = ⌊keep·H·W/(H+W)⌋, two factors), by ``svd``, ``asvd``,
``svd-llm`` and ``feature``. Printed: WikiText-2 *test* perplexity (sliding window over
the first ``--ppl-tokens`` tokens) at each keep ratio; zero-shot accuracy on ARC-Easy,
PIQA and HellaSwag (``--limit`` documents each, the same documents for every model) at
``--accuracy-keeps``, with the paired drop and its 95 % interval; the calibration
seconds (one hooked pass over the WikiText-2 *validation* split) and the decomposition
seconds of each configuration (factor cache empty at the start: the first keep ratio of
each method decomposes, lower ratios are sliced from the cached factors). Configurations
are measured keep by keep (every method at 0.9 first), so a partial run is informative.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_methods.py [--keeps 0.9,0.8,0.7,0.6]
       [--methods svd,asvd,svd-llm,feature] [--accuracy-keeps 0.9,0.8] [--limit 200]
       [--ppl-tokens 16384] [--sequences 16] [--length 512] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = ("dse_arc_easy", "dse_piqa", "dse_hellaswag")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    """Measure and print every configuration (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--methods", default="svd,asvd,svd-llm,feature")
    parser.add_argument("--keeps", default="0.9,0.8,0.7,0.6")
    parser.add_argument("--accuracy-keeps", default="0.9,0.8")
    parser.add_argument("--accuracy-methods", default=None,
                        help="methods measured for accuracy (default: all of --methods)")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ppl-tokens", type=int, default=16384)
    parser.add_argument("--sequences", type=int, default=128)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--cache-dir", default=None,
                        help="keep the calibration here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", default=None,
                        help="also write the JSON here, rewritten after every measured row (partial runs keep theirs)")
    args = parser.parse_args()

    import torch

    from dse.cache import FactorCache
    from dse.calibration import CalibrationSettings
    from dse.calibration_store import load_or_collect
    from dse.models import load_model
    from dse.surgery import decomposed
    from objectives.accuracy import AccuracyObjective
    from objectives.paired import paired_drop
    from objectives.perplexity import PerplexityObjective
    from space.config import DecompositionConfig

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    methods = [m for m in args.methods.split(",") if m]
    accuracy_methods = (args.accuracy_methods.split(",") if args.accuracy_methods else methods)
    loaded = load_model(args.model)
    n_layers = loaded.spec.n_layers
    out: dict[str, Any] = {"model": args.model, "ppl_tokens": args.ppl_tokens, "limit": args.limit,
                           "calibration": {"sequences": args.sequences, "length": args.length},
                           "perplexity": [], "accuracy": []}

    def say(text: str) -> None:
        print(text, flush=True, file=sys.stderr if args.json else sys.stdout)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.cache_dir or temporary
        settings = CalibrationSettings(sequences=args.sequences, length=args.length)
        start = time.perf_counter()
        calibration, _ = load_or_collect(loaded, settings, cache_dir=scratch, progress=True)
        out["calibration"]["seconds"] = time.perf_counter() - start
        out["calibration"]["tokens"] = calibration.tokens
        say(f"calibration: {calibration.tokens} tokens of wikitext2/valid.txt in "
            f"{out['calibration']['seconds']:.1f} s (pass and write)")
        # Memory only, large enough for every method's factors at the largest keep.
        cache = FactorCache(root=Path(scratch) / "factors", max_bytes=0, memory_bytes=8 * 1024**3)
        ppl = PerplexityObjective(max_tokens=args.ppl_tokens)
        base = ppl.measure(loaded.target())
        out["baseline_perplexity"] = base.perplexity
        say(f"baseline perplexity {base.perplexity:.2f} ({base.tokens} WikiText-2 test tokens)")
        for keep in _floats(args.keeps):  # every method at one keep before the next keep
            for method in methods:
                gamma = DecompositionConfig(layers=tuple(range(n_layers)), keep=keep, method=method)
                with decomposed(loaded, gamma, cache=cache, calibration=calibration) as report:
                    value = ppl.measure(loaded.target()).perplexity
                row = {"method": method, "keep": keep, "perplexity": value,
                       "param_reduction_pct": report.param_reduction_pct,
                       "decompose_seconds": report.decompose_seconds,
                       "max_jitter": max(t.jitter for t in report.per_tensor)}
                out["perplexity"].append(row)
                say(f"{method:8s} keep {keep:.1f}: perplexity {value:12.2f}  "
                    f"(−{report.param_reduction_pct:.2f} % parameters, decomposition "
                    f"{report.decompose_seconds:.1f} s)")
        if _floats(args.accuracy_keeps) and args.limit > 0:
            objective = AccuracyObjective(TASKS, limit=args.limit, batch_size=args.batch_size,
                                          show_progress=False)
            start = time.perf_counter()
            baseline = objective.measure(loaded.target())
            out["baseline_accuracy"] = baseline.accuracy
            say(f"baseline accuracy {baseline.accuracy:.3f} (mean of {', '.join(TASKS)}; "
                f"{args.limit} documents each; {time.perf_counter() - start:.0f} s)")
            for method in accuracy_methods:
                for keep in _floats(args.accuracy_keeps):
                    gamma = DecompositionConfig(layers=tuple(range(n_layers)), keep=keep,
                                                method=method)
                    with decomposed(loaded, gamma, cache=cache, calibration=calibration) as report:
                        measured = objective.measure(loaded.target())
                    drop = paired_drop(baseline, measured)
                    row = {"method": method, "keep": keep, "accuracy": measured.accuracy,
                           "drop_pp": drop.drop_pp, "ci_pp": [drop.ci_low_pp, drop.ci_high_pp],
                           "per_task": {k: v.accuracy for k, v in measured.per_task.items()},
                           "param_reduction_pct": report.param_reduction_pct}
                    out["accuracy"].append(row)
                    say(f"{method:8s} keep {keep:.1f}: accuracy {measured.accuracy:.3f}, drop "
                        f"{drop.drop_pp:+.1f} pp [{drop.ci_low_pp:+.1f}, {drop.ci_high_pp:+.1f}] "
                        f"(" + ", ".join(f"{k} {v.accuracy:.3f}" for k, v in
                                         measured.per_task.items()) + ")")
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
