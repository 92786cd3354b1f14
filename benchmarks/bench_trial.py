"""Seconds per trial: lm-eval's own scoring versus the engine's fast path, same γ, same documents.

For the quick study's tasks (``dse_arc_easy``, ``dse_piqa``, ``dse_hellaswag``) at
``--limit`` documents per task on SmolLM2-135M, a study's sequence is replayed twice in
one process, interleaved: the baseline, then three γ (rank 1, all tensors) whose first
decomposed layer is early, middle and late. The *plain* path is lm-eval's ``HFLM`` at
batch size 16 (what the project ran before); the *engine* path is
:mod:`objectives.fast_lm` (each context once, LM head only where scored, token-budget
batches) with prefix reuse (the baseline's hidden states entering the undecomposed
layers). Timed: the accuracy measurement (``AccuracyObjective.measure``) of each model
state; γ's factors are computed once before (a study's factor cache) and are not timed.

Reported per state: wall and CPU seconds on each path, the ratio plain/engine of CPU
seconds (``ratio``; with ``--threads 1`` the compute a trial costs, robust to other
processes on a shared machine) and of wall seconds (``wall_ratio``), the largest
per-request log-likelihood difference, and whether every per-document outcome
(``acc``) is identical. ``speedup`` is the median ratio over the three γ (the trials;
the baseline is measured once per study).

The early γ is also scored by ``HFLM`` at batch size 1 (``--no-spread`` skips it): the
largest difference between lm-eval's two batch sizes is the floor under which a
log-likelihood difference is float32 rounding, not a scoring difference.

``--budgets 512,1024,...`` instead times the engine (no prefix reuse) on the baseline at
each token budget, to choose the default.

Usage: .venv/bin/python benchmarks/bench_trial.py [--limit 100] [--threads 1] [--json] [--no-spread]
       [--budgets 512,1024,2048,4096]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TASKS = ("dse_arc_easy", "dse_piqa", "dse_hellaswag")
# (label, layers): the quick study's rules (skip the first two layers, rank 1, whole layers)
GAMMAS = (("early", (2, 17, 29)), ("middle", (15, 29)), ("late", (26, 29)))


def _measure(objective: Any, target: Any) -> tuple[float, float, Any, dict[str, list[list[float]]]]:
    """Wall and CPU seconds of one measurement, the measurement, its per-request log-likelihoods."""
    started, cpu = time.perf_counter(), time.process_time()
    measurement = objective.measure(target)
    return time.perf_counter() - started, time.process_time() - cpu, measurement, objective.last_loglikelihoods


def _compare(plain: tuple[Any, ...], engine: tuple[Any, ...]) -> dict[str, Any]:
    (t_plain, c_plain, m_plain, ll_plain), (t_engine, c_engine, m_engine, ll_engine) = plain, engine
    pairs = [
        (a, b)
        for task in ll_plain
        for doc_a, doc_b in zip(ll_plain[task], ll_engine[task], strict=True)
        for a, b in zip(doc_a, doc_b, strict=True)
    ]
    worst = max(abs(a - b) for a, b in pairs)
    # float32 sums: a difference of one unit in the last place grows with the magnitude
    worst_relative = max(abs(a - b) / max(1.0, abs(a)) for a, b in pairs)
    largest = max(abs(a) for a, _ in pairs)
    same = all(m_plain.per_task[t].per_doc == m_engine.per_task[t].per_doc for t in m_plain.per_task)
    return {
        "plain_s": round(t_plain, 2),
        "engine_s": round(t_engine, 2),
        "wall_ratio": round(t_plain / t_engine, 2),
        "plain_cpu_s": round(c_plain, 2),
        "engine_cpu_s": round(c_engine, 2),
        "ratio": round(c_plain / c_engine, 2),
        "max_abs_loglik_diff": worst,
        "max_rel_loglik_diff": worst_relative,
        "largest_abs_loglik": round(largest, 2),
        "same_outcomes": same,
        "accuracy": round(m_engine.accuracy, 4),
        "n_docs": m_engine.n_docs_total,
    }


def _spread(plain: tuple[Any, ...], single: tuple[Any, ...]) -> float:
    """Largest per-request log-likelihood difference between two runs of lm-eval's own scoring."""
    ll_a, ll_b = plain[3], single[3]
    return max(
        abs(a - b)
        for task in ll_a
        for doc_a, doc_b in zip(ll_a[task], ll_b[task], strict=True)
        for a, b in zip(doc_a, doc_b, strict=True)
    )


def bench(model_name: str, limit: int, spread: bool = True) -> dict[str, Any]:
    """Baseline and three γ, each on both paths; the per-state rows and the summary.

    With ``spread``, the early γ is also scored by ``HFLM`` at batch size 1: how far lm-eval's
    own log-likelihoods move with its batch's padding (the rounding floor of the comparison).
    """
    from dse.cache import FactorCache
    from dse.models import load_model
    from dse.surgery import decomposed
    from objectives.accuracy import AccuracyObjective
    from space.config import DecompositionConfig

    loaded = load_model(model_name)
    plain = AccuracyObjective(TASKS, limit=limit, batch_size=16, fast=False, show_progress=False)
    engine = AccuracyObjective(TASKS, limit=limit, fast=True, show_progress=False)
    plain_single = AccuracyObjective(TASKS, limit=limit, batch_size=1, fast=False, show_progress=False)
    plain.documents()
    plain_single.documents()
    engine.documents()  # read the files before timing, as a study does
    cache = FactorCache()
    states: list[tuple[str, DecompositionConfig | None]] = [("baseline", None)]
    states += [(label, DecompositionConfig(layers=layers, rank=1, tensors="all")) for label, layers in GAMMAS]
    for _, gamma in states:
        if gamma is not None:
            with decomposed(loaded, gamma, cache=cache):  # factors into the cache, untimed
                pass
    rows = []
    for label, gamma in states:
        if gamma is None:
            run_plain, run_engine = _measure(plain, loaded.target()), _measure(engine, loaded.target())
            row = {"state": label, "layers": [], **_compare(run_plain, run_engine)}
        else:
            with decomposed(loaded, gamma, cache=cache):
                run_plain, run_engine = _measure(plain, loaded.target()), _measure(engine, loaded.target())
                single = _measure(plain_single, loaded.target()) if spread and label == "early" else None
            row = {"state": label, "layers": list(gamma.layers), **_compare(run_plain, run_engine)}
            if single is not None:
                row["hflm_batch1_vs_batch16_max_abs_diff"] = _spread(run_plain, single)
                row["hflm_batch1_same_outcomes"] = all(
                    run_plain[2].per_task[t].per_doc == single[2].per_task[t].per_doc for t in run_plain[2].per_task
                )
        rows.append(row)
        print(json.dumps(row), flush=True)
    store = engine.prefix_store
    trials = [row for row in rows if row["state"] != "baseline"]
    return {
        "speedup": statistics.median(row["ratio"] for row in trials),
        "max_abs_loglik_diff": max(row["max_abs_loglik_diff"] for row in rows),
        "max_rel_loglik_diff": max(row["max_rel_loglik_diff"] for row in rows),
        "same_outcomes": all(row["same_outcomes"] for row in rows),
        "hflm_batch1_vs_batch16_max_abs_diff": next(
            (row[key] for row in rows if (key := "hflm_batch1_vs_batch16_max_abs_diff") in row), None),
        "model": model_name,
        "tasks": list(TASKS),
        "limit": limit,
        "threads": _threads(),
        "prefix_store_mib": round(store.nbytes / 2**20, 1) if store else 0,
        "prefix_store_stride": store.stride if store else None,
        "rows": rows,
    }


def bench_budgets(model_name: str, limit: int, budgets: list[int]) -> dict[str, Any]:
    """Seconds of one engine measurement of the baseline at each token budget."""
    from dse.models import load_model
    from objectives.accuracy import AccuracyObjective

    loaded = load_model(model_name)
    rows = []
    for budget in budgets:
        objective = AccuracyObjective(
            TASKS, limit=limit, fast=True, token_budget=budget, prefix_reuse=False, show_progress=False
        )
        objective.documents()
        seconds, cpu, measurement, _ = _measure(objective, loaded.target())
        rows.append({"token_budget": budget, "seconds": round(seconds, 2), "cpu_s": round(cpu, 2),
                     "accuracy": round(measurement.accuracy, 4)})
        print(json.dumps(rows[-1]), flush=True)
    return {"model": model_name, "limit": limit, "threads": _threads(), "budgets": rows}


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main() -> None:
    """Parse the flags, run, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--limit", type=int, default=100, help="documents per task (default 100)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--budgets", default=None, help="comma-separated token budgets to time instead")
    parser.add_argument("--json", action="store_true", help="end with one JSON object of the results")
    parser.add_argument("--no-spread", action="store_true",
                        help="skip scoring the early γ with HFLM at batch size 1 (lm-eval's own rounding spread)")
    args = parser.parse_args()
    if args.limit < 1:
        parser.error(f"--limit must be a positive number of documents, got {args.limit}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.budgets:
        result = bench_budgets(args.model, args.limit, [int(b) for b in args.budgets.split(",")])
    else:
        result = bench(args.model, args.limit, spread=not args.no_spread)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "rows":
                print(f"{key}: {value}")


if __name__ == "__main__":
    main()
