"""Forward latency of decomposed vs original SmolLM2-135M on this machine (prints figures).

One "run" is what a chat turn costs: prefill a 128-token prompt, then 32 greedy decode
steps with the KV cache, batch 1 (the engine's own pass, ``objectives.workload.greedy_decode``,
timed apart at the end of the prefill). For each configuration the original and the
decomposed model are timed alternately in one process (undo / re-install between runs,
so both see the same machine state; the CPUs here are shared), and the medians are
compared. The configurations are the paper's Table IV rows for Llama-2-7B (32 layers,
1-based) scaled to SmolLM2's 30 layers by ``space.paper.scale_paper_layers`` (as a study
seeds them), 0-based, rank 1, all tensors, never touching layers 0-1 (heuristic 3).

Usage: .venv/bin/python benchmarks/bench_latency.py [--repeats 7] [--threads 1] [--fold]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from objectives.base import EvalTarget
from objectives.workload import Workload, greedy_decode, synchronize, workload_input_ids
from space.paper import PAPER_TABLE_IV, scale_paper_layers

# The paper's Table IV rows (1-based layers of 32-layer Llama-2-7B) with 2, 3, 5 and 7 layers.
PAPER_ROWS: tuple[tuple[int, ...], ...] = tuple(layers for _, layers in PAPER_TABLE_IV[:4])
FIRST_ALLOWED = 2  # heuristic 3: layers 0-1 stay undecomposed


def one_run(target: EvalTarget, workload: Workload, prompt_ids: Any) -> tuple[float, float]:
    """Seconds for the prefill and for the greedy decode steps after it: the engine's pass."""
    marks: list[float] = []

    def mark() -> None:
        synchronize(target.device)
        marks.append(time.perf_counter())

    mark()
    greedy_decode(target, workload, input_ids=prompt_ids, after_prefill=mark)
    mark()
    start, prefilled, end = marks
    return prefilled - start, end - prefilled


def main() -> None:
    """Parse the flags, time the configurations and print the table and fitted slope."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per model and configuration")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-steps", type=int, default=32)
    parser.add_argument("--fold", action="store_true", help="fold Γ into U1 (two matmuls)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default); 1 is steadiest on a shared machine")
    args = parser.parse_args()

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)

    from dse import surgery
    from dse.cache import FactorCache
    from dse.models import load_model
    from space.config import DecompositionConfig

    loaded = load_model("smollm2-135m", device=args.device)
    spec = loaded.spec
    target = loaded.target()
    # The engine's workload: seeded prompt ids, batch 1, greedy decode on the KV cache.
    workload = Workload(prefill_tokens=args.prompt_tokens, decode_tokens=args.decode_steps, batch_size=1)
    prompt_ids = workload_input_ids(target, workload)
    cache = FactorCache(None)

    def timed() -> tuple[float, float]:
        return one_run(target, workload, prompt_ids)

    print(f"SmolLM2-135M, {args.device}, float32, torch threads {torch.get_num_threads()}, "
          f"batch 1, prefill {args.prompt_tokens} tokens + {args.decode_steps} greedy decode steps, "
          f"{args.repeats} alternating repeats per configuration (medians), rank 1, all 7 tensors"
          f"{', folded' if args.fold else ''}")
    timed()  # warm-up: allocator, kernels, first-call overheads
    header = (f"{'paper layers (1-based/32)':<27} {'our layers (0-based/30)':<24} {'params -%':>9} "
              f"{'orig s':>7} {'decomp s':>8} {'ratio':>6} {'latency -%':>10} {'prefill -%':>10} "
              f"{'decode -%':>9} {'lat%/param%':>11}")
    print(header)
    slopes: list[float] = []
    points: list[tuple[float, float]] = []  # (parameter reduction %, latency reduction %)
    for paper_layers in PAPER_ROWS:
        layers = scale_paper_layers(paper_layers, spec.n_layers, low=FIRST_ALLOWED)
        gamma = DecompositionConfig(layers=layers, tensors="all", rank=1)
        report = surgery.apply(loaded, gamma, cache=cache, fold=args.fold)
        factors = surgery.installed_factors(loaded)
        errors = {(t.layer, t.tensor): t.rel_error for t in report.per_tensor}
        timed()  # warm-up of the decomposed shapes
        original: list[tuple[float, float]] = []
        decomposed: list[tuple[float, float]] = []
        for repeat in range(args.repeats):
            # Alternate which goes first, so drifts in machine load hit both alike.
            order = ("orig", "dec") if repeat % 2 == 0 else ("dec", "orig")
            for which in order:
                if which == "orig":
                    surgery.undo(loaded)
                    original.append(timed())
                else:
                    surgery.install_factors(loaded, gamma, factors, fold=args.fold, rel_errors=errors)
                    decomposed.append(timed())
        surgery.undo(loaded)
        orig_total = statistics.median(p + d for p, d in original)
        dec_total = statistics.median(p + d for p, d in decomposed)
        prefill_cut = 100 * (1 - statistics.median(p for p, _ in decomposed)
                             / statistics.median(p for p, _ in original))
        decode_cut = 100 * (1 - statistics.median(d for _, d in decomposed)
                            / statistics.median(d for _, d in original))
        cut = 100 * (1 - dec_total / orig_total)
        slope = cut / report.param_reduction_pct
        slopes.append(slope)
        points.append((report.param_reduction_pct, cut))
        print(f"{list(paper_layers)!s:<27} {list(layers)!s:<24} {report.param_reduction_pct:>9.2f} "
              f"{orig_total:>7.3f} {dec_total:>8.3f} {dec_total / orig_total:>6.3f} {cut:>10.2f} "
              f"{prefill_cut:>10.2f} {decode_cut:>9.2f} {slope:>11.2f}")
    # A line through the origin weights the larger (less noisy) reductions more than a mean of ratios.
    fitted = sum(p * c for p, c in points) / sum(p * p for p, _ in points)
    print(f"latency reduction per 1% of parameter reduction: least-squares slope {fitted:.2f}%, "
          f"mean of ratios {statistics.mean(slopes):.2f}% (range {min(slopes):.2f}..{max(slopes):.2f}); "
          f"the paper saw about 0.5% on A100s")


if __name__ == "__main__":
    main()
