"""Latency: samples, median and IQR of the workload; the timing helper; the ratio."""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable

import pytest
import torch

from objectives.base import EvalTarget
from objectives.latency import LatencyMeasurement, LatencyObjective, latency_ratio, ratio, time_callable
from objectives.workload import Workload
from space.errors import InvalidConfigError


def test_latency_on_tiny_llama(
    tiny_target: EvalTarget, small_workload: Workload, unchanged: Callable[[], None]
) -> None:
    tiny_target.model.train()  # measure() must evaluate in eval mode and give training mode back
    result = LatencyObjective(small_workload).measure(tiny_target)
    assert tiny_target.model.training
    tiny_target.model.eval()
    unchanged()
    assert result.objective == "latency"
    assert result.method == "perf-counter"
    assert result.device == "cpu"
    assert len(result.samples_s) == small_workload.repeats
    assert min(result.samples_s) <= result.median_s <= max(result.samples_s)
    assert result.median_s == statistics.median(result.samples_s)
    q1, _, q3 = statistics.quantiles(result.samples_s, n=4, method="inclusive")
    assert result.spread_s == pytest.approx(q3 - q1)
    assert all(s > 0 for s in result.samples_s)
    assert result.workload == small_workload
    assert LatencyMeasurement.model_validate(result.model_dump()) == result


def test_time_callable_runs_warmup_then_repeats() -> None:
    calls: list[int] = []
    timing = time_callable(lambda: calls.append(1), device="cpu", warmup=2, repeats=5)
    assert len(calls) == 7
    assert len(timing.samples_s) == 5
    assert timing.method == "perf-counter"
    assert timing.spread_kind == "iqr"


def test_single_sample_has_no_spread() -> None:
    timing = time_callable(lambda: None, warmup=0, repeats=1)
    assert timing.spread_s == 0.0
    assert timing.median_s == timing.samples_s[0]


@pytest.mark.parametrize(("warmup", "repeats"), [(-1, 3), (0, 0)])
def test_time_callable_refuses_bad_counts(warmup: int, repeats: int) -> None:
    with pytest.raises(InvalidConfigError, match="repeats >= 1"):
        time_callable(lambda: None, warmup=warmup, repeats=repeats)


def _measurement(median: float) -> LatencyMeasurement:
    return LatencyMeasurement(
        median_s=median, spread_s=0.0, samples_s=[median], method="perf-counter", device="cpu", workload=Workload()
    )


def test_ratio_of_medians() -> None:
    assert ratio(_measurement(0.3), _measurement(0.4)) == pytest.approx(0.75)
    assert ratio(0.5, 0.25) == pytest.approx(2.0)
    assert latency_ratio is ratio


def test_ratio_needs_a_positive_baseline() -> None:
    with pytest.raises(InvalidConfigError, match="positive baseline"):
        ratio(_measurement(0.3), _measurement(0.0))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_events_time_the_workload_on_gpu(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    model = copy.deepcopy(tiny_llama.model).to("cuda")  # the shared model stays on CPU
    target = EvalTarget(model=model, tokenizer=tiny_llama.tokenizer, device="cuda")
    result = LatencyObjective(Workload(prefill_tokens=16, decode_tokens=4)).measure(target)
    assert result.method == "cuda-events"
    assert result.device == "cuda"
    assert len(result.samples_s) == 3
    assert all(s > 0 for s in result.samples_s)
    timing = time_callable(lambda: torch.ones(1024, 1024, device="cuda").sum(), device="cuda", repeats=4)
    assert timing.method == "cuda-events" and len(timing.samples_s) == 4
