"""Latency, energy and EDP ratios of two model states from paired, balanced ABBA runs, with intervals.

A shared machine's latency drifts by several times from minute to minute, so a ratio of
two separate measurements means little. Here the original (A) and the decomposed (B)
modules take turns in blocks A B B A, then B A A B, …: each block gives one ratio
(B's total over A's), drift within a block hits both sides alike, and the blocks'
log-ratios give a t interval. Blocks are added until the latency ratio's interval is
within ±``width`` (default ±2 %) or ``max_blocks`` is reached.

Contention is detected, never silently reported: a run that got less CPU than its
threads should have had (another process on the cores), a load average above the cores
this process may use, hypervisor steal time, or an interval still wider than asked after
the last block all set ``noisy`` and say why in ``noise``. While contention is seen,
blocks are repeated up to ``max_blocks``.

The thread count is chosen (the cores this process may use, at most torch's setting:
more threads than free cores make OpenMP spin against other processes) and recorded.
Stand-ins are labelled: without energy, the EDP ratio is latency² (constant power
assumed); a CPU-time energy estimate says so.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from objectives.paired import t_quantile
from objectives.workload import Workload, eval_mode, run_workload, synchronize, workload_input_ids

if TYPE_CHECKING:
    from objectives.base import EvalTarget
    from objectives.energy import EnergyObjective
    from objectives.latency import LatencyObjective

__all__ = ["PairedRatios", "PairedComparison", "available_cores", "choose_threads", "compare_paired", "ratio_interval"]

# A run that got less than this share of its threads' CPU time was competing for cores.
MIN_CPU_SHARE = 0.8
# Hypervisor steal above this share of the CPU time during the runs is contention.
MAX_STEAL = 0.05
# NVML energy counters refresh every 20-100 ms: a metered run lasts at least this long.
NVML_MIN_RUN_S = 0.5


class PairedRatios(BaseModel):
    """The efficiency a trial reports: ratios (compressed / original) with intervals, and how measured.

    Written once: :class:`PairedComparison` measures them, ``dse.records.TrialRecord`` stores them.
    """

    latency_s: float | None = None  # compressed, median per pass
    latency_ratio: float | None = None
    latency_ratio_ci: list[float] | None = None
    latency_method: str | None = None
    energy_j: float | None = None  # compressed, median per pass
    energy_ratio: float | None = None
    energy_ratio_ci: list[float] | None = None
    energy_method: str | None = None
    energy_estimated: bool | None = None
    edp_ratio: float | None = None
    edp_ratio_ci: list[float] | None = None
    edp_method: str | None = None


class PairedComparison(PairedRatios):
    """:class:`PairedRatios` from paired ABBA runs, with the baselines and the runs' conditions."""

    model_config = ConfigDict(extra="forbid")

    baseline_latency_s: float | None = None
    baseline_energy_j: float | None = None
    repeats: int = 0  # ABBA blocks
    threads: int = 1
    noisy: bool = False
    noise: list[str] = []
    standins: dict[str, str] = {}


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None) -> int:
    """Threads for timed runs: ``requested``, else the usable cores capped at torch's setting."""
    import torch

    if requested is not None:
        return requested
    return max(1, min(available_cores(), torch.get_num_threads()))


@contextlib.contextmanager
def _threads(count: int, device: str) -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    if not device.startswith("cuda"):
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def ratio_interval(log_ratios: list[float], confidence: float = 0.95) -> tuple[float, list[float]]:
    """Geometric-mean ratio and its t interval from per-block log-ratios."""
    n = len(log_ratios)
    mean = statistics.fmean(log_ratios)
    if n < 2:
        return math.exp(mean), [0.0, math.inf]
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * statistics.stdev(log_ratios) / math.sqrt(n)
    return math.exp(mean), [math.exp(mean - half), math.exp(mean + half)]


def _steal_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs from /proc/stat, None where unreadable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    return (values[7] if len(values) > 7 else 0), sum(values[:8])


class _Run(BaseModel):
    latency_s: float
    energy_j: float | None
    energy_method: str | None
    energy_estimated: bool | None
    detail: str | None
    cpu_share: float | None


def _one_run(target: EvalTarget, workload: Workload, input_ids: object, *, passes: int,
             energy: EnergyObjective | None, threads: int) -> _Run:
    """``passes`` workload passes, timed (CUDA events or perf_counter) inside one energy window."""
    from objectives.latency import time_callable

    meter, release = energy.meter_for(target.device) if energy is not None else (None, None)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    try:
        synchronize(target.device)
        if meter is not None:
            meter.start()
        timing = time_callable(lambda: run_workload(target, workload, input_ids=input_ids),  # type: ignore[arg-type]
                               device=target.device, warmup=0, repeats=passes)
        synchronize(target.device)
        reading = meter.stop() if meter is not None else None
    finally:
        if release is not None:
            release()
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    share = None if target.device.startswith("cuda") or wall <= 0 else cpu / (wall * threads)
    return _Run(latency_s=statistics.fmean(timing.samples_s),
                energy_j=reading.energy_j / passes if reading is not None else None,
                energy_method=reading.method if reading is not None else None,
                energy_estimated=reading.estimated if reading is not None else None,
                detail=reading.detail if reading is not None else None, cpu_share=share)


def compare_paired(
    target: EvalTarget,
    use: Callable[[str], None],
    *,
    workload: Workload,
    latency: LatencyObjective | None,
    energy: EnergyObjective | None,
    width: float = 0.02,
    min_blocks: int = 3,
    max_blocks: int = 8,
    threads: int | None = None,
    confidence: float = 0.95,
) -> PairedComparison:
    """Ratios of state ``"compressed"`` to ``"baseline"`` (``use(state)`` switches the model).

    Args:
        target: the model (switched in place by ``use``).
        use: installs ``"baseline"`` or ``"compressed"`` modules.
        workload: one pass; its ``warmup`` passes per state run first, untimed.
        latency: the latency objective (its presence turns latency on).
        energy: the energy objective, whose meter each run uses (None: no energy).
        width: stop once the latency ratio's interval is within ±width (relative).
        min_blocks: ABBA blocks at least (2 at least, for an interval).
        max_blocks: ABBA blocks at most.
        threads: threads for the runs (None: :func:`choose_threads`).
        confidence: of the ratio intervals.
    """
    chosen = choose_threads(threads)
    min_blocks, max_blocks = max(2, min_blocks), max(2, min_blocks, max_blocks)
    single = workload.model_copy(update={"warmup": 0, "repeats": 1})
    input_ids = workload_input_ids(target, single)
    runs: dict[str, list[_Run]] = {"baseline": [], "compressed": []}
    blocks: list[tuple[float, float | None]] = []  # (latency log-ratio, energy log-ratio)
    steal0 = _steal_ticks()
    passes = 1
    with _threads(chosen, target.device), eval_mode(target.model):
        for state in ("baseline", "compressed"):
            use(state)
            for _ in range(workload.warmup):
                run_workload(target, single, input_ids=input_ids)
        if energy is not None and target.device.startswith("cuda"):
            began = time.perf_counter()
            run_workload(target, single, input_ids=input_ids)
            synchronize(target.device)
            passes = max(1, math.ceil(NVML_MIN_RUN_S / max(time.perf_counter() - began, 1e-3)))
        while len(blocks) < max_blocks:
            order = ("baseline", "compressed", "compressed", "baseline")
            if len(blocks) % 2:
                order = ("compressed", "baseline", "baseline", "compressed")
            block: dict[str, list[_Run]] = {"baseline": [], "compressed": []}
            for state in order:
                use(state)
                run = _one_run(target, single, input_ids, passes=passes, energy=energy, threads=chosen)
                block[state].append(run)
                runs[state].append(run)
            lat = math.log(sum(r.latency_s for r in block["compressed"]) / sum(r.latency_s for r in block["baseline"]))
            en = None
            if energy is not None:
                en_b = sum(r.energy_j or 0.0 for r in block["baseline"])
                en_c = sum(r.energy_j or 0.0 for r in block["compressed"])
                en = math.log(en_c / en_b) if en_b > 0 and en_c > 0 else None
            blocks.append((lat, en))
            if len(blocks) < min_blocks:
                continue
            _, ci = ratio_interval([b[0] for b in blocks], confidence)
            precise = max(ci[1] / math.exp(statistics.fmean(b[0] for b in blocks)) - 1.0,
                          1.0 - ci[0] / math.exp(statistics.fmean(b[0] for b in blocks))) <= width
            if precise and not _contention(runs, steal0, chosen, target.device):
                break
        use("compressed")
    noise = _contention(runs, steal0, chosen, target.device)
    result = PairedComparison(repeats=len(blocks), threads=chosen)
    lat_ratio, lat_ci = ratio_interval([b[0] for b in blocks], confidence)
    half = max(lat_ci[1] / lat_ratio - 1.0, 1.0 - lat_ci[0] / lat_ratio)
    if half > width:
        noise.append(f"latency ratio interval ±{half:.1%} after {len(blocks)} ABBA blocks (target ±{width:.0%})")
    result.noise, result.noisy = noise, bool(noise)
    # Every run is timed, so the latency ratio is always known.
    result.latency_s = statistics.median(r.latency_s for r in runs["compressed"])
    result.baseline_latency_s = statistics.median(r.latency_s for r in runs["baseline"])
    result.latency_ratio, result.latency_ratio_ci = lat_ratio, lat_ci
    result.latency_method = ("cuda-events" if target.device.startswith("cuda") else "perf-counter") + " paired-abba"
    energies = [b[1] for b in blocks]
    if energy is not None and all(e is not None for e in energies):
        result.energy_ratio, result.energy_ratio_ci = ratio_interval([e for e in energies if e is not None],
                                                                     confidence)
        result.energy_j = statistics.median(r.energy_j or 0.0 for r in runs["compressed"])
        result.baseline_energy_j = statistics.median(r.energy_j or 0.0 for r in runs["baseline"])
        last = runs["compressed"][-1]
        result.energy_method, result.energy_estimated = last.energy_method, last.energy_estimated
        result.edp_ratio, result.edp_ratio_ci = ratio_interval(
            [b[0] + (b[1] or 0.0) for b in blocks], confidence)
        result.edp_method = "latency × energy"
        if last.energy_estimated:
            why = (f"estimate, not a reading: process CPU time × {energy.watts_per_core:g} W per core "
                   "(no readable RAPL or NVML counter)")
            result.standins = {"energy_ratio": why, "edp_ratio": f"uses the energy {why}"}
    else:
        result.edp_ratio = lat_ratio * lat_ratio
        result.edp_ratio_ci = [lat_ci[0] ** 2, lat_ci[1] ** 2]
        result.edp_method = "latency² stand-in"
        result.standins = {"edp_ratio": "latency² stand-in: energy not measured (assumes constant power)"}
    return result


def _contention(runs: dict[str, list[_Run]], steal0: tuple[int, int] | None, threads: int, device: str) -> list[str]:
    """Why the runs were not alone on the machine (empty when nothing says so)."""
    reasons = []
    shares = [r.cpu_share for rs in runs.values() for r in rs if r.cpu_share is not None]
    if shares and statistics.median(shares) < MIN_CPU_SHARE:
        reasons.append(f"runs got {statistics.median(shares):.0%} of {threads} thread(s)' CPU time: "
                       "other processes competed for the cores")
    if not device.startswith("cuda"):
        with contextlib.suppress(OSError):
            load = os.getloadavg()[0]
            if load > available_cores() + 0.5:
                reasons.append(f"load average {load:.1f} on {available_cores()} usable core(s)")
    steal1 = _steal_ticks()
    if steal0 is not None and steal1 is not None and steal1[1] > steal0[1]:
        steal = (steal1[0] - steal0[0]) / (steal1[1] - steal0[1])
        if steal > MAX_STEAL:
            reasons.append(f"hypervisor steal {steal:.0%} of CPU time")
    return reasons
