"""A budget study's best γ against uniform SVD-LLM at the same reduction (prints figures).

The question of docs/results.md ("A search against uniform SVD-LLM"): does the γ a
parameter-budget study found beat the uniform ratio every tensor of every layer at keep
``--uniform-keep`` (0.8: 15.83 % of SmolLM2-135M), on data the study did not select on?

Measured side by side in one process, on the same documents and the same calibration
(the study's ``[calibration]``): the original model, the uniform γ and the study's best
γ (``--top`` best by the study's objective, re-measured). Printed per model: WikiText-2
*test* perplexity (first ``--ppl-tokens`` tokens; one deterministic run, no interval),
zero-shot accuracy on the study's tasks at the first ``--limit`` documents of each (the
study selected on a seeded sample of ``limit`` documents, mostly others), the paired drop
against the original with its 95 % interval, and the paired difference of each study γ
against the uniform γ (positive: the study γ is more accurate) with its 95 % interval.

Usage: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_budget_study.py --study smollm2-budget-profile
       --storage sqlite:///dse.db [--top 1] [--limit 200] [--ppl-tokens 8192] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    """Measure and print the three models (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default="smollm2-budget-profile")
    parser.add_argument("--storage", default="sqlite:///dse.db")
    parser.add_argument("--top", type=int, default=1, help="how many of the study's best γ to re-measure")
    parser.add_argument("--uniform-keep", type=float, default=0.8)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--ppl-tokens", type=int, default=8192)
    parser.add_argument("--cache-dir", default=None, help="factor and calibration cache (default: $DSE_CACHE_DIR)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON here, after every measured model")
    args = parser.parse_args()

    import torch

    from dse.cache import FactorCache
    from dse.calibration_store import load_or_collect
    from dse.models import load_model
    from dse.study.api import load_study
    from dse.surgery import decomposed
    from objectives.accuracy import AccuracyObjective
    from objectives.paired import paired_drop
    from objectives.perplexity import PerplexityObjective
    from space.config import DecompositionConfig

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    handle = load_study(args.study, storage=args.storage)
    definition = handle.definition
    settings = definition.calibration_settings
    if settings is None:
        sys.exit(f"study {args.study} uses no calibrated method; nothing to compare with uniform SVD-LLM")
    measured_rows = [r for r in handle.trials(include_rejected=False, states=("COMPLETE",))
                     if r.get("accuracy_drop_pp") is not None and r.get("gamma")]
    measured_rows.sort(key=lambda r: r["accuracy_drop_pp"])
    chosen = measured_rows[: args.top]
    if not chosen:
        sys.exit(f"study {args.study} has no measured trial yet")
    loaded = load_model(definition.model, device=definition.device, dtype=definition.dtype)
    tasks = tuple(definition.evaluation.tasks)
    out: dict[str, Any] = {"model": definition.model, "study": args.study, "tasks": list(tasks),
                           "limit": args.limit, "ppl_tokens": args.ppl_tokens,
                           "calibration": settings.model_dump(mode="json"), "rows": []}

    def say(text: str) -> None:
        print(text, flush=True, file=sys.stderr if args.json else sys.stdout)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")

    cache_dir = args.cache_dir
    calibration, _ = load_or_collect(loaded, settings, cache_dir=cache_dir, progress=True)
    cache = FactorCache(max_bytes=0, memory_bytes=8 * 1024**3)
    ppl = PerplexityObjective(max_tokens=args.ppl_tokens)
    objective = AccuracyObjective(tasks, limit=args.limit, batch_size=args.batch_size, show_progress=False)
    start = time.perf_counter()
    baseline = objective.measure(loaded.target())
    base_ppl = ppl.measure(loaded.target()).perplexity
    out |= {"baseline_accuracy": baseline.accuracy, "baseline_perplexity": base_ppl}
    say(f"original: perplexity {base_ppl:.2f}, accuracy {baseline.accuracy:.3f} (mean of {', '.join(tasks)}; "
        f"first {args.limit} documents each; {time.perf_counter() - start:.0f} s)")
    uniform = DecompositionConfig(layers=tuple(range(loaded.spec.n_layers)), keep=args.uniform_keep,
                                  method="svd-llm")
    candidates: list[tuple[str, DecompositionConfig, dict[str, Any] | None]] = [
        (f"uniform svd-llm keep {args.uniform_keep:g}", uniform, None)]
    candidates += [(f"study trial {r['number']}: {r['gamma_label']}", DecompositionConfig.from_canonical(r["gamma"]), r)
                   for r in chosen]
    reference = None
    for label, gamma, row in candidates:
        with decomposed(loaded, gamma, cache=cache, calibration=calibration) as report:
            value = ppl.measure(loaded.target()).perplexity
            accuracy = objective.measure(loaded.target())
        drop = paired_drop(baseline, accuracy)
        entry: dict[str, Any] = {
            "label": label, "gamma": gamma.canonical(loaded.spec), "perplexity": value,
            "param_reduction_pct": report.param_reduction_pct, "accuracy": accuracy.accuracy,
            "drop_pp": drop.drop_pp, "drop_ci_pp": [drop.ci_low_pp, drop.ci_high_pp],
            "per_task": {k: v.accuracy for k, v in accuracy.per_task.items()},
        }
        if row is not None:
            entry["study_drop_pp"] = row["accuracy_drop_pp"]
            entry["study_drop_ci_pp"] = [row["drop_ci_low_pp"], row["drop_ci_high_pp"]]
        if reference is None:
            reference = accuracy
        else:  # paired against the uniform γ: positive when this γ is more accurate
            gain = paired_drop(reference, accuracy)
            entry["gain_over_uniform_pp"] = -gain.drop_pp
            entry["gain_ci_pp"] = [-gain.ci_high_pp, -gain.ci_low_pp]
        out["rows"].append(entry)
        extra = ""
        if "gain_over_uniform_pp" in entry:
            extra = (f"; {entry['gain_over_uniform_pp']:+.1f} pp over uniform "
                     f"[{entry['gain_ci_pp'][0]:+.1f}, {entry['gain_ci_pp'][1]:+.1f}]")
        say(f"{label}: −{report.param_reduction_pct:.2f} % parameters, perplexity {value:.2f}, accuracy "
            f"{accuracy.accuracy:.3f}, drop {drop.drop_pp:+.1f} pp [{drop.ci_low_pp:+.1f}, {drop.ci_high_pp:+.1f}]"
            + extra)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
