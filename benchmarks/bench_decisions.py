"""Error rates of the accuracy-constraint decisions, simulated (no model): prints a table or JSON.

Each replication draws paired 0/1 outcomes for N documents with a known true drop d
(pp): a document's (baseline, compressed) results are (1, 0) with probability
(r + d) / 2, (0, 1) with probability (r − d) / 2 and agree otherwise, r being the
discordance rate (default 0.25: the two models disagree on a quarter of the documents).
The engine's own decision code then looks at the growing comparison after every chunk,
exactly as a study does: :class:`objectives.sequential.SequentialDecider` with the
intervals of :class:`objectives.paired.PairedStats`.

Reported per mode and true drop:

- ``false_stop_rate``: share stopped early (declared above τ before the planned
  documents) while the true drop is below τ (0 where the true drop is τ or more: a stop
  is right there);
- ``false_feasible_rate``: share declared feasible while the true drop is τ or more (0
  where it is below τ);
- ``mean_docs``: documents evaluated per replication.

Modes: ``point`` and ``confident`` evaluate ``limit`` documents with early stop at every
chunk; ``adaptive`` continues in chunks up to ``max_limit`` while the interval straddles
τ. ``uncorrected`` (with ``--uncorrected``) is ``point`` with the fixed-sample interval at
every look: what early stop did before the looks were corrected.

Usage: .venv/bin/python benchmarks/bench_decisions.py [--replications 2000] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

import numpy as np

from objectives.paired import DropEstimate, PairedStats
from objectives.sequential import SequentialDecider

PP = 100.0


def _estimate(stats: PairedStats, n: int, confidence: float, critical: float | None) -> DropEstimate:
    low, high = stats.interval(confidence, critical)
    return DropEstimate.model_construct(
        drop_pp=stats.mean * PP, ci_low_pp=low, ci_high_pp=high, per_task={}, aggregate="mean",
        confidence=confidence, n_docs=n, complete=False, critical=critical,
    )


def _stats(total: float, squares: float, n: int) -> PairedStats:
    """Bonett–Price adjusted paired statistics from Σd and Σd² (as paired_stats computes them)."""
    m = n + 2
    centre = total / m
    variance = (squares + 2.0 - m * centre * centre) / (m - 1)
    return PairedStats(mean=total / n, centre=centre, se=math.sqrt(max(variance, 0.0) / m), df=float(m - 1),
                       weight=1.0)


def simulate(mode: str, true_drop_pp: float, *, tau: float, confidence: float, replications: int, limit: int,
             max_limit: int, chunk: int, discordance: float, seed: int) -> dict[str, Any]:
    """One cell of the table: error rates and mean documents of ``mode`` at ``true_drop_pp``."""
    rng = np.random.default_rng(seed)
    planned = max_limit if mode == "adaptive" else limit
    d = true_drop_pp / PP
    probs = [(discordance + d) / 2.0, (discordance - d) / 2.0]
    if min(probs) < 0 or sum(probs) > 1:
        raise SystemExit(f"true drop {true_drop_pp} pp does not fit a discordance of {discordance}")
    draws = rng.choice(np.array([1.0, -1.0, 0.0]), size=(replications, planned), p=[*probs, 1.0 - sum(probs)])
    sums, squares = np.cumsum(draws, axis=1), np.cumsum(draws * draws, axis=1)
    looks = [*range(chunk, planned, chunk), planned]
    stops = feasible = 0
    docs = 0
    uncorrected = mode == "uncorrected"
    for r in range(replications):
        decider = SequentialDecider(tau=tau, confidence=confidence, mode="point" if uncorrected else mode,  # type: ignore[arg-type]
                                    planned_docs=planned, min_docs=limit, early_stop=True)
        for n in looks:
            stats = _stats(float(sums[r, n - 1]), float(squares[r, n - 1]), n)
            final = n == planned

            def estimate(c: float, s: PairedStats = stats, n: int = n) -> DropEstimate:
                return _estimate(s, n, confidence, None if uncorrected else c)

            decision = decider.look(estimate, n, final=final)
            if decision is not None:
                stops += decision.stopped_early
                feasible += decision.feasible
                docs += decision.docs
                break
    below = true_drop_pp < tau
    return {
        "mode": mode,
        "true_drop_pp": true_drop_pp,
        "false_stop_rate": stops / replications if below else 0.0,
        "false_feasible_rate": 0.0 if below else feasible / replications,
        "mean_docs": docs / replications,
    }


def run(*, tau: float, confidence: float, replications: int, limit: int, max_limit: int, chunk: int,
        discordance: float, seed: int, modes: tuple[str, ...],
        offsets: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 3.0)) -> dict[str, Any]:
    """The whole table as the ``--json`` object."""
    results = []
    for i, mode in enumerate(modes):
        for j, offset in enumerate(offsets):
            results.append(simulate(mode, tau + offset, tau=tau, confidence=confidence, replications=replications,
                                    limit=limit, max_limit=max_limit, chunk=chunk, discordance=discordance,
                                    seed=seed + 1000 * i + j))
    return {"tau_pp": tau, "confidence": confidence, "results": results}


def main(argv: list[str] | None = None) -> int:
    """Parse the flags, simulate, print the table or the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replications", type=int, default=2000)
    parser.add_argument("--tau", type=float, default=4.0)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--limit", type=int, default=400, help="documents a point/confident trial plans")
    parser.add_argument("--max-limit", type=int, default=1600, help="documents adaptive may go up to")
    parser.add_argument("--chunk", type=int, default=50, help="documents between looks")
    parser.add_argument("--discordance", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--uncorrected", action="store_true", help="add the uncorrected early stop for comparison")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.replications < 1 or args.chunk < 1 or args.limit < 1 or args.max_limit < args.limit:
        parser.error("need replications, chunk, limit >= 1 and max-limit >= limit")
    if not 0.5 < args.confidence < 1.0:
        parser.error("confidence must be in (0.5, 1)")
    modes = ("point", "confident", "adaptive") + (("uncorrected",) if args.uncorrected else ())
    out = run(tau=args.tau, confidence=args.confidence, replications=args.replications, limit=args.limit,
              max_limit=args.max_limit, chunk=args.chunk, discordance=args.discordance, seed=args.seed, modes=modes)
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"τ = {args.tau} pp, confidence {args.confidence}, {args.replications} replications, discordance "
          f"{args.discordance}, limit {args.limit}, max_limit {args.max_limit}, a look every {args.chunk} documents")
    print(f"{'mode':<12}{'true drop':>10}{'false stop':>12}{'false feas.':>12}{'mean docs':>11}")
    for row in out["results"]:
        print(f"{row['mode']:<12}{row['true_drop_pp']:>10.1f}{row['false_stop_rate']:>12.4f}"
              f"{row['false_feasible_rate']:>12.4f}{row['mean_docs']:>11.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
