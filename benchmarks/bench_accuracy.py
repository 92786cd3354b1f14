"""Accuracy evaluation speed on this machine (prints figures; not a test).

One evaluation of SmolLM2-135M on the first 100 ARC-Easy test documents (the local task
``dse_arc_easy``, lm-eval in-process) at batch sizes 1, 8 and 32: wall seconds, seconds
per document, tokens per second (tokens fed to the model, padding included), the
accuracy, and the share of the evaluation spent outside the model's forward passes
(tokenising, request building, lm-eval's log-softmax over the logits and bookkeeping),
timed with forward hooks on the model. Target (issue 4): under 10 %.

The documents are read once before timing (as a study does before its first trial).

On a CPU shared with other busy processes, torch's default of one thread per core can
be many times slower than ``--threads 1`` (OpenMP threads waiting on each other).

Usage: .venv/bin/python benchmarks/bench_accuracy.py [--limit 100] [--batch-sizes 1,8,32]
       [--threads N] [--model smollm2-135m] [--task dse_arc_easy] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class ForwardTimer:
    """Sums the wall time and input tokens of the model's top-level forward calls."""

    def __init__(self, model: Any) -> None:
        self.seconds = 0.0
        self.tokens = 0
        self.calls = 0
        self._started = 0.0
        self._handles = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(self._after, with_kwargs=True),
        ]

    def _before(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = args[0] if args else kwargs.get("input_ids")
        if ids is not None:
            self.tokens += int(ids.numel())
        self.calls += 1
        self._started = time.perf_counter()

    def _after(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        self.seconds += time.perf_counter() - self._started

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


def bench(model_name: str, task: str, limit: int, batch_sizes: list[int], threads: int | None) -> list[dict[str, Any]]:
    """Time ``task`` on ``limit`` documents at each batch size; one row per batch size."""
    import torch

    from dse.models import load_model
    from objectives.accuracy import AccuracyObjective

    if threads is not None:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    loaded = load_model(model_name)
    print(f"{model_name}: loaded in {time.perf_counter() - started:.1f} s; torch threads: {torch.get_num_threads()}")
    rows = []
    for batch_size in batch_sizes:
        objective = AccuracyObjective([task], limit=limit, batch_size=batch_size, show_progress=False)
        objective.documents()  # read the benchmark file before timing
        timer = ForwardTimer(loaded.model)
        try:
            start = time.perf_counter()
            result = objective.measure(loaded.target())
            seconds = time.perf_counter() - start
        finally:
            timer.close()
        rows.append(
            {
                "batch_size": batch_size,
                "seconds": seconds,
                "seconds_per_doc": seconds / result.n_docs_total,
                "forward_calls": timer.calls,
                "tokens": timer.tokens,
                "tokens_per_s": timer.tokens / seconds,
                "outside_forward_pct": 100.0 * (1.0 - timer.seconds / seconds),
                "accuracy": result.accuracy,
            }
        )
        row = rows[-1]
        print(
            f"  batch {batch_size:>3}: {seconds:7.1f} s, {row['seconds_per_doc']:.3f} s/doc, "
            f"{row['tokens_per_s']:7.0f} tok/s, outside forward {row['outside_forward_pct']:.1f} %, "
            f"acc {result.accuracy:.3f}",
            flush=True,
        )
    return rows


def main() -> None:
    """Parse the flags, run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="dse_arc_easy")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list at the end")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = bench(args.model, args.task, args.limit, batch_sizes, args.threads)
    import torch

    print(
        f"\n{args.model}, {args.limit} {args.task} documents, zero-shot (lm-eval in-process), "
        f"{torch.get_num_threads()} torch thread(s)\n"
    )
    print("| batch size | seconds | s/doc | forward calls | tokens/s | outside forward | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['batch_size']} | {row['seconds']:.1f} | {row['seconds_per_doc']:.3f} | {row['forward_calls']} "
            f"| {row['tokens_per_s']:.0f} | {row['outside_forward_pct']:.1f} % | {row['accuracy']:.3f} |"
        )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
