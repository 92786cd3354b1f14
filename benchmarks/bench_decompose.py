"""Decomposition speed and accuracy on this machine (prints figures; not a test).

1. Every decomposable tensor of the real SmolLM2-135M (30 layers × 7 tensors) at ranks 1
   and 64: ``svd`` (the default) vs ``hooi`` (tensorly's HOOI), total seconds and the
   worst excess over the optimal error (from each tensor's singular values); then the
   factor cache: the whole model at rank 64 into an empty cache, and rank 1 of every
   tensor sliced from it (memory, and from disk in a fresh process-like cache).
2. One random 4096×11008 matrix (Llama-2-7B's MLP shape, seed 0) at ranks 1, 64, 256:
   the default ``svd`` path vs tensorly's ``tucker`` (HOOI), and ``torch.svd_lowrank``
   with its defaults for reference; excess error against the singular values.

Targets (issue 3): on the large matrix the default ≥ 10× faster than tensorly with
excess error ≤ 0.1 %; the whole SmolLM2 in < 30 s; a lower rank of a decomposed tensor
in milliseconds. tensorly's time barely depends on the rank (two full SVDs dominate), so
by default it runs at rank 64 only; ``--hooi-ranks 1,64,256`` runs all (≈ 4 more minutes).

The machine's load average is printed first: on shared CPUs other processes inflate
every time here (both columns alike).

Usage: .venv/bin/python benchmarks/bench_decompose.py [--hooi-ranks 64] [--full-svd]
       [--threads N] [--skip-smollm2] [--skip-matrix] [--cache-only]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any


def _excess_pct(error: float, best: float) -> float:
    return 100.0 * (error / best - 1.0) if best > 0 else 0.0


def _smollm2_weights() -> tuple[str, list[tuple[int, str, Any]]]:
    import torch

    from dse.models import load_model

    loaded = load_model("smollm2-135m")
    spec = loaded.spec
    weights = []
    for layer in range(spec.n_layers):
        for t in spec.tensors:
            module = loaded.model.get_submodule(spec.module_path(layer, t.name))
            assert isinstance(module, torch.nn.Linear), f"{t.name} is a {type(module).__name__}"
            weights.append((layer, t.name, module.weight.detach()))
    return loaded.fingerprint, weights


def bench_smollm2(ranks: list[int], *, methods: bool = True) -> None:
    """Decompose every SmolLM2-135M tensor and print errors and times per rank."""
    import torch

    from dse.cache import FactorCache
    from dse.decompose import decompose, optimal_relative_error, relative_error

    start = time.perf_counter()
    fingerprint, weights = _smollm2_weights()
    print(f"SmolLM2-135M: {len(weights)} tensors, loaded in {time.perf_counter() - start:.1f} s")
    singular_values = [torch.linalg.svdvals(w) for _, _, w in weights] if methods else []

    if methods:
        print("\n| method | rank | seconds (all tensors) | max rel. error "
              "| max excess over optimum |")
        print("|---|---|---|---|---|")
    for rank in ranks if methods else []:
        for method in ("svd", "hooi"):
            seconds, worst_error, worst_excess = 0.0, 0.0, 0.0
            for (_, _, weight), s in zip(weights, singular_values, strict=True):
                begin = time.perf_counter()
                factors = decompose(weight, rank, method=method)
                seconds += time.perf_counter() - begin
                error = relative_error(weight, factors)
                worst_error = max(worst_error, error)
                best = optimal_relative_error(s, rank)
                worst_excess = max(worst_excess, _excess_pct(error, best))
            print(f"| {method} | {rank} | {seconds:.2f} | {worst_error:.4f} "
                  f"| {worst_excess:.5f} % |", flush=True)

    high, low = max(ranks), min(ranks)
    with tempfile.TemporaryDirectory() as root:
        cache = FactorCache(Path(root))
        begin = time.perf_counter()
        for layer, tensor, weight in weights:
            cache.factors(fingerprint, layer, tensor, weight, high)
        fill = time.perf_counter() - begin
        memory_ms = []
        for layer, tensor, weight in weights:
            begin = time.perf_counter()
            _, hit = cache.factors(fingerprint, layer, tensor, weight, low)
            memory_ms.append(1e3 * (time.perf_counter() - begin))
            assert hit
        fresh = FactorCache(Path(root))
        disk_ms = []
        for layer, tensor, weight in weights:
            begin = time.perf_counter()
            _, hit = fresh.factors(fingerprint, layer, tensor, weight, low)
            disk_ms.append(1e3 * (time.perf_counter() - begin))
            assert hit
        info = fresh.info()
    print(f"\nFactor cache, SmolLM2-135M: all {len(weights)} tensors at rank {high} into an empty "
          f"cache in {fill:.2f} s ({cache.stats.decompositions} decompositions, "
          f"{info.bytes / 2**20:.1f} MiB on disk)")
    print(f"rank {low} sliced from memory: median {statistics.median(memory_ms):.3f} ms per "
          f"tensor, "
          f"{sum(memory_ms):.1f} ms for all; from disk (fresh cache): median "
          f"{statistics.median(disk_ms):.3f} ms, {sum(disk_ms):.1f} ms for all; "
          f"{fresh.stats.decompositions} decompositions")


def bench_matrix(ranks: list[int], hooi_ranks: list[int], full_svd: bool) -> None:
    """Time svd and hooi on one Llama-2-7B-sized matrix per rank."""
    import torch

    from dse.cache import FactorCache
    from dse.decompose import (
        FULL_SVD_MAX_DIM,
        TuckerFactors,
        decompose,
        optimal_relative_error,
        relative_error,
        truncated_svd,
    )

    height, width = 4096, 11008
    weight = torch.randn(height, width, generator=torch.Generator().manual_seed(0))
    print(f"\nRandom {height}×{width} float32 matrix (seed 0)")
    begin = time.perf_counter()
    singular_values = torch.linalg.svdvals(weight)
    print(f"singular values only (torch.linalg.svdvals): {time.perf_counter() - begin:.1f} s")
    if full_svd:
        begin = time.perf_counter()
        truncated_svd(weight, 1, algorithm="full")
        print(f"full SVD with vectors (torch.linalg.svd): {time.perf_counter() - begin:.1f} s")

    print("\n| rank | default svd s | excess | tensorly tucker s | excess | speed-up "
          "| svd_lowrank(niter=2) s | excess |")
    print("|---|---|---|---|---|---|---|---|")
    for rank in ranks:
        best = optimal_relative_error(singular_values, rank)
        begin = time.perf_counter()
        factors = decompose(weight, rank)
        ours = time.perf_counter() - begin
        ours_excess = _excess_pct(relative_error(weight, factors), best)
        hooi_cells = "– | – | –"
        if rank in hooi_ranks:
            begin = time.perf_counter()
            hooi = decompose(weight, rank, method="hooi")
            theirs = time.perf_counter() - begin
            hooi_excess = _excess_pct(relative_error(weight, hooi), best)
            hooi_cells = f"{theirs:.1f} | {hooi_excess:.4f} % | {theirs / ours:.1f}×"
        begin = time.perf_counter()
        u, s, v = torch.svd_lowrank(weight, q=min(rank + 10, height), niter=2)
        lowrank = time.perf_counter() - begin
        lowrank_error = relative_error(
            weight, TuckerFactors(u[:, :rank], torch.diag(s[:rank]), v[:, :rank]))
        print(f"| {rank} | {ours:.2f} | {ours_excess:.4f} % | {hooi_cells} | {lowrank:.2f} | "
              f"{_excess_pct(lowrank_error, best):.3f} % |", flush=True)

    with tempfile.TemporaryDirectory() as root:
        cache = FactorCache(Path(root))
        cache.factors("bench", 0, "up", weight, max(ranks))
        begin = time.perf_counter()
        _, hit = cache.factors("bench", 0, "up", weight, min(ranks))
        sliced = 1e3 * (time.perf_counter() - begin)
    print(f"\nrank {min(ranks)} sliced from the cached rank-{max(ranks)} entry: {sliced:.2f} ms "
          f"(hit: {hit}). Matrices with min(H, W) ≤ {FULL_SVD_MAX_DIM} always get the full SVD")


def main() -> None:
    """Parse the flags and run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hooi-ranks", default="64",
                        help="ranks at which tensorly runs on the 4096×11008 matrix (default 64)")
    parser.add_argument("--full-svd", action="store_true",
                        help="also time a full SVD with vectors of the large matrix (~50 s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--skip-matrix", action="store_true")
    parser.add_argument("--cache-only", action="store_true",
                        help="on SmolLM2, time only the factor cache (not svd vs hooi)")
    args = parser.parse_args()
    hooi_ranks = [int(r) for r in args.hooi_ranks.split(",") if r.strip()]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if not args.skip_smollm2:
        bench_smollm2([1, 64], methods=not args.cache_only)
    if not args.skip_matrix:
        bench_matrix([1, 64, 256], hooi_ranks, args.full_svd)


if __name__ == "__main__":
    main()
