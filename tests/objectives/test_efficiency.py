"""Paired ABBA efficiency ratios: intervals, repeats, threads, stand-in labels, contention flags."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import Any

import pytest

from objectives.efficiency import compare_paired, ratio_interval
from objectives.energy import EnergyObjective
from objectives.latency import LatencyObjective
from objectives.workload import Workload

SMALL = Workload(prefill_tokens=8, decode_tokens=2, warmup=0, repeats=1)


def test_ratio_interval_is_a_t_interval_on_log_ratios() -> None:
    logs = [math.log(0.9), math.log(1.0), math.log(0.95)]
    ratio, (low, high) = ratio_interval(logs, 0.95)
    assert ratio == pytest.approx(math.exp(sum(logs) / 3))
    sd = (sum((x - sum(logs) / 3) ** 2 for x in logs) / 2) ** 0.5
    half = 4.302653 * sd / math.sqrt(3)  # t(0.975, 2)
    assert (low, high) == pytest.approx((ratio * math.exp(-half), ratio * math.exp(half)), rel=1e-5)
    assert ratio_interval([0.1], 0.95)[1] == [0.0, math.inf]  # one block: no interval


def test_paired_runs_report_ratios_intervals_repeats_and_threads(tiny_llama: Any) -> None:
    states: list[str] = []
    result = compare_paired(tiny_llama.target(), states.append, workload=SMALL, latency=LatencyObjective(SMALL),
                            energy=EnergyObjective(SMALL), width=1e-9, min_blocks=2, max_blocks=3, threads=1)
    # An impossible width: every block up to the maximum is run, and the record says it is imprecise.
    assert result.repeats == 3 and result.threads == 1
    abba = ["baseline", "compressed", "compressed", "baseline"]
    baab = ["compressed", "baseline", "baseline", "compressed"]
    # warm-up visits both states, then balanced blocks A B B A · B A A B · A B B A, and it ends decomposed
    assert states == ["baseline", "compressed", *abba, *baab, *abba, "compressed"]
    for ratio, ci in ((result.latency_ratio, result.latency_ratio_ci), (result.energy_ratio, result.energy_ratio_ci),
                      (result.edp_ratio, result.edp_ratio_ci)):
        assert ratio is not None and ci is not None and ci[0] <= ratio <= ci[1]
    assert result.edp_ratio == pytest.approx(result.latency_ratio * result.energy_ratio)
    assert result.noisy and any("target ±" in reason for reason in result.noise)
    if result.energy_estimated:
        assert "estimate" in result.standins["energy_ratio"] and "edp_ratio" in result.standins


def test_edp_without_energy_is_a_labelled_latency_squared(tiny_llama: Any) -> None:
    result = compare_paired(tiny_llama.target(), lambda state: None, workload=SMALL,
                            latency=LatencyObjective(SMALL), energy=None, min_blocks=2, max_blocks=2, threads=1)
    assert result.energy_ratio is None and result.edp_method == "latency² stand-in"
    assert result.edp_ratio == pytest.approx(result.latency_ratio**2)
    assert "energy not measured" in result.standins["edp_ratio"]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_a_competing_process_is_flagged(tiny_llama: Any) -> None:
    """A busy process on the same core: the record is flagged noisy and says why."""
    core = min(os.sched_getaffinity(0))
    before = os.sched_getaffinity(0)
    busy = subprocess.Popen([sys.executable, "-c", f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True: pass"])
    try:
        os.sched_setaffinity(0, {core})
        result = compare_paired(tiny_llama.target(), lambda state: None, workload=SMALL,
                                latency=LatencyObjective(SMALL), energy=None, width=0.5, min_blocks=2,
                                max_blocks=3, threads=1)
    finally:
        os.sched_setaffinity(0, before)
        busy.kill()
        busy.wait()
    assert result.noisy
    assert any("CPU time" in reason or "load average" in reason for reason in result.noise), result.noise


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device")
def test_paired_runs_on_gpu_use_cuda_events_and_nvml(tiny_llama: Any) -> None:
    import copy

    from objectives.base import EvalTarget

    model = copy.deepcopy(tiny_llama.model).to("cuda")  # the shared model stays on CPU
    target = EvalTarget(model=model, tokenizer=tiny_llama.tokenizer, device="cuda")
    workload = Workload(prefill_tokens=32, decode_tokens=8, warmup=1, repeats=2)
    result = compare_paired(target, lambda state: None, workload=workload, latency=LatencyObjective(workload),
                            energy=EnergyObjective(workload), min_blocks=2, max_blocks=3)
    assert result.latency_method == "cuda-events paired-abba"
    assert result.energy_method in ("nvml-energy-counter", "nvml-power-sampling") and not result.energy_estimated
    assert result.edp_method == "latency × energy" and not result.standins
    assert result.edp_ratio_ci is not None and result.edp_ratio_ci[0] <= result.edp_ratio <= result.edp_ratio_ci[1]
