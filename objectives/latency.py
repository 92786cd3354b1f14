"""Latency of the fixed workload: median and interquartile range of repeated passes.

The shared machines are noisy, so a latency alone means little; the engine reports it
as a :func:`ratio` to the undecomposed model measured in the same process. On CUDA each
pass is timed with CUDA events (device time, with synchronisation); on CPU with
``time.perf_counter``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from objectives.base import EvalTarget, Measurement, Objective
from objectives.workload import Workload, check_device, eval_mode, run_workload, synchronize, workload_input_ids
from space.errors import InvalidConfigError

__all__ = ["LatencyMeasurement", "LatencyObjective", "Timing", "latency_ratio", "ratio", "time_callable"]

TimingMethod = Literal["cuda-events", "perf-counter"]


class Timing(BaseModel):
    """Repeated timings of one callable: every sample, its median and its spread."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_s: float
    spread_s: float
    spread_kind: Literal["iqr"] = "iqr"
    samples_s: list[float]
    method: TimingMethod
    device: str


class LatencyMeasurement(Measurement):
    """Seconds per workload pass.

    ``spread_s`` is the interquartile range of ``samples_s`` (robust, like the median;
    0 for a single sample). ``method`` says which clock produced the samples.
    """

    objective: Literal["latency"] = "latency"
    median_s: float
    spread_s: float
    spread_kind: Literal["iqr"] = "iqr"
    samples_s: list[float]
    method: TimingMethod
    device: str
    workload: Workload


def _iqr(samples: list[float]) -> float:
    if len(samples) < 2:
        return 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return q3 - q1


def time_callable(fn: Callable[[], object], *, device: str = "cpu", warmup: int = 1, repeats: int = 3) -> Timing:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls.

    On a CUDA device each call sits between two recorded CUDA events and the end event
    is synchronised, so the sample is the GPU time of everything ``fn`` queued; on CPU
    the sample is ``perf_counter`` wall time. Use it to time, e.g., one full evaluation.

    Raises:
        InvalidConfigError: ``warmup < 0``, ``repeats < 1``, or a CUDA device is missing.
    """
    if warmup < 0 or repeats < 1:
        raise InvalidConfigError(f"timing needs warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    check_device(device)
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    method: TimingMethod
    if device.startswith("cuda"):
        import torch

        method = "cuda-events"
        with torch.cuda.device(device):
            synchronize(device)
            for _ in range(repeats):
                start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
                start.record()
                fn()
                end.record()
                end.synchronize()
                samples.append(start.elapsed_time(end) / 1000.0)
    else:
        method = "perf-counter"
        for _ in range(repeats):
            begin = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - begin)
    return Timing(
        median_s=statistics.median(samples), spread_s=_iqr(samples), samples_s=samples, method=method, device=device
    )


class LatencyObjective(Objective):
    """Seconds per pass of the workload (prefill + greedy decode), median of repeats."""

    name: ClassVar[str] = "latency"

    def __init__(self, workload: Workload | None = None) -> None:
        self.workload = workload if workload is not None else Workload()

    def measure(self, target: EvalTarget) -> LatencyMeasurement:
        """Time ``workload.repeats`` passes after ``workload.warmup`` untimed ones."""
        check_device(target.device)
        input_ids = workload_input_ids(target, self.workload)
        with eval_mode(target.model):
            timing = time_callable(
                lambda: run_workload(target, self.workload, input_ids=input_ids),
                device=target.device,
                warmup=self.workload.warmup,
                repeats=self.workload.repeats,
            )
        return LatencyMeasurement(
            median_s=timing.median_s,
            spread_s=timing.spread_s,
            samples_s=timing.samples_s,
            method=timing.method,
            device=target.device,
            workload=self.workload,
        )


def ratio(compressed: LatencyMeasurement | float, baseline: LatencyMeasurement | float) -> float:
    """``compressed / baseline`` of median latencies; below 1 means the compressed model is faster.

    Raises:
        InvalidConfigError: the baseline latency is not positive.
    """
    num = compressed.median_s if isinstance(compressed, LatencyMeasurement) else float(compressed)
    den = baseline.median_s if isinstance(baseline, LatencyMeasurement) else float(baseline)
    if not den > 0:
        raise InvalidConfigError(f"a latency ratio needs a positive baseline latency, got {den}")
    return num / den


latency_ratio = ratio
