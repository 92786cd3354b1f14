"""Energy: NVML counter and power sampling on a fake NVML, RAPL on a fake sysfs, the CPU-time estimate."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
import torch

from objectives.base import EvalTarget
from objectives.energy import (
    CpuTimeMeter,
    EnergyMeasurement,
    EnergyObjective,
    NvmlCounterMeter,
    NvmlPowerMeter,
    RaplMeter,
    edp,
    edp_ratio,
    energy_ratio,
    rapl_zones,
)
from objectives.workload import Workload
from space.errors import DataError, InvalidConfigError


class FakeNvml:
    """The part of pynvml the energy objective uses, with readings the test chooses."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801, N818 - pynvml's name
        pass

    def __init__(
        self,
        *,
        energy_mj: Iterable[int] | None = None,
        power_mw: Iterable[int] | int | None = None,
        init_fails: bool = False,
    ) -> None:
        self.energy_mj = list(energy_mj) if energy_mj is not None else None
        self.power_mw = power_mw if isinstance(power_mw, int) or power_mw is None else list(power_mw)
        self.init_fails = init_fails
        self.inits = 0
        self.shutdowns = 0
        self.handles: list[int] = []
        self.power_calls = 0

    def nvmlInit(self) -> None:  # noqa: N802
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")
        self.inits += 1

    def nvmlShutdown(self) -> None:  # noqa: N802
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:  # noqa: N802
        self.handles.append(index)
        return f"gpu{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> int:  # noqa: N802
        if self.energy_mj is None:
            raise self.NVMLError_NotSupported("Not Supported")
        return self.energy_mj.pop(0)

    def nvmlDeviceGetPowerUsage(self, handle: str) -> int:  # noqa: N802
        if self.power_mw is None:
            raise self.NVMLError_NotSupported("Not Supported")
        self.power_calls += 1
        if isinstance(self.power_mw, int):
            return self.power_mw
        return self.power_mw.pop(0)


def _clock(*values: float) -> Callable[[], float]:
    return iter(values).__next__


# ---- NVML ---------------------------------------------------------------------------------


def test_nvml_counter_gives_exact_energy_per_run(
    tiny_target: EvalTarget, small_workload: Workload, unchanged: Callable[[], None]
) -> None:
    # Reads: the probe that chooses the meter, then start and stop around the 3 runs.
    fake = FakeNvml(energy_mj=[7_000, 10_000, 16_000])
    objective = EnergyObjective(small_workload, nvml=fake, nvml_index=0)
    meter, release = objective.meter_for("cuda:0")
    assert isinstance(meter, NvmlCounterMeter)
    result = objective.measure_with(tiny_target, meter)
    release()
    unchanged()
    assert result.method == "nvml-energy-counter"
    assert not result.estimated
    assert result.runs == 3
    assert result.energy_j == pytest.approx(2.0)  # (16000 - 10000) mJ / 3 runs
    assert result.power_w == pytest.approx(2.0 / result.latency_s)
    assert result.edp_js == pytest.approx(2.0 * result.latency_s)
    assert "10000 -> 16000 mJ" in result.detail
    assert (fake.inits, fake.shutdowns, fake.handles) == (1, 1, [0])


def test_nvml_counter_meter_reads_millijoules() -> None:
    fake = FakeNvml(energy_mj=[1_000_000, 1_012_345])
    meter = NvmlCounterMeter(fake, "gpu0", clock=_clock(5.0, 7.5))
    meter.start()
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(12.345)
    assert reading.duration_s == pytest.approx(2.5)


def test_unsupported_counter_falls_back_to_power_sampling(
    tiny_target: EvalTarget, small_workload: Workload
) -> None:
    fake = FakeNvml(energy_mj=None, power_mw=100_000)  # a constant 100 W
    objective = EnergyObjective(small_workload, nvml=fake, nvml_index=0, sample_interval_s=0.001)
    meter, release = objective.meter_for("cuda:0")
    assert isinstance(meter, NvmlPowerMeter)
    result = objective.measure_with(tiny_target, meter)
    release()
    assert result.method == "nvml-power-sampling"
    assert not result.estimated
    # Constant power: the trapezoids integrate to power x the sampled window, exactly.
    assert result.energy_j == pytest.approx(100.0 * result.latency_s, rel=1e-9)
    assert result.power_w == pytest.approx(100.0)
    assert fake.power_calls >= 3  # the probe, the start sample and the stop sample at least
    assert "sampled" in result.detail and "not supported" in result.detail
    assert (fake.inits, fake.shutdowns) == (1, 1)


def test_power_sampling_integrates_trapezoids() -> None:
    # With a long interval only the start and stop samples exist: (50 W + 150 W) / 2 x 2 s.
    fake = FakeNvml(power_mw=[50_000, 150_000])
    meter = NvmlPowerMeter(fake, "gpu0", interval_s=60.0, clock=_clock(10.0, 12.0))
    meter.start()
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(200.0)
    assert reading.duration_s == pytest.approx(2.0)
    assert "2 times" in reading.detail


def test_nvml_that_fails_to_initialise_is_one_clear_error() -> None:
    objective = EnergyObjective(nvml=FakeNvml(init_fails=True), nvml_index=0)
    with pytest.raises(DataError, match="NVML, which failed to initialise: Driver Not Loaded"):
        objective.meter_for("cuda")


def test_gpu_without_energy_or_power_is_one_clear_error() -> None:
    fake = FakeNvml(energy_mj=None, power_mw=None)
    with pytest.raises(DataError, match="neither energy nor power for cuda:0"):
        EnergyObjective(nvml=fake, nvml_index=0).meter_for("cuda:0")
    assert fake.shutdowns == fake.inits == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="without CUDA the torch index is used as is")
def test_nvml_device_index_follows_the_torch_device() -> None:
    fake = FakeNvml(energy_mj=[0])
    EnergyObjective(nvml=fake).meter_for("cuda:1")
    assert fake.handles == [1]


# ---- RAPL ---------------------------------------------------------------------------------

MAX_RANGE = 262_143_328_850


def _zone(path: Path, name: str, energy_uj: int, max_range: int | None = MAX_RANGE) -> Path:
    path.mkdir(parents=True)
    (path / "name").write_text(name + "\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    if max_range is not None:
        (path / "max_energy_range_uj").write_text(f"{max_range}\n")
    return path


def _fake_powercap(root: Path) -> dict[str, Path]:
    """Two packages with subzones (nested, and flat as /sys/class/powercap lists them), psys, mmio."""
    (root / "intel-rapl").mkdir(parents=True)
    (root / "intel-rapl" / "enabled").write_text("1\n")
    pkg0 = _zone(root / "intel-rapl:0", "package-0", 1_000_000)
    core0 = _zone(pkg0 / "intel-rapl:0:0", "core", 400_000)
    (root / "intel-rapl:0:0").symlink_to(core0)
    pkg1 = _zone(root / "intel-rapl:1", "package-1", MAX_RANGE - 250_000)
    dram1 = _zone(pkg1 / "intel-rapl:1:0", "dram", 90_000)
    (root / "intel-rapl:1:0").symlink_to(dram1)
    psys = _zone(root / "intel-rapl:2", "psys", 5_000_000)
    mmio = _zone(root / "intel-rapl-mmio:0", "package-0", 1_000_000)
    return {"pkg0": pkg0, "pkg1": pkg1, "core0": core0, "dram1": dram1, "psys": psys, "mmio": mmio}


def _set(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def test_rapl_zones_are_the_packages_only(tmp_path: Path) -> None:
    _fake_powercap(tmp_path)
    zones, why_not = rapl_zones(tmp_path)
    assert why_not == ""
    assert [z.name for z in zones] == ["package-0", "package-1"]
    assert [z.path.name for z in zones] == ["intel-rapl:0", "intel-rapl:1"]
    assert zones[0].max_energy_range_uj == MAX_RANGE


def test_rapl_sums_packages_corrects_wraparound_and_skips_subzones(tmp_path: Path) -> None:
    z = _fake_powercap(tmp_path)
    zones, _ = rapl_zones(tmp_path)
    meter = RaplMeter(zones, clock=_clock(0.0, 4.0))
    meter.start()
    _set(z["pkg0"], 3_500_000)  # +2.5 J
    _set(z["pkg1"], 750_000)  # wrapped: 250_000 to the top, then 750_000: +1.0 J
    _set(z["core0"], 90_000_000)  # subzones, psys and mmio must not be added
    _set(z["dram1"], 90_000_000)
    _set(z["psys"], 90_000_000)
    _set(z["mmio"], 90_000_000)
    reading = meter.stop()
    assert reading.method == "rapl"
    assert not reading.estimated
    assert reading.energy_j == pytest.approx(3.5)
    assert reading.duration_s == pytest.approx(4.0)
    assert reading.detail == "RAPL package-0 + package-1 (1 counter wrap-around corrected)"


def test_rapl_without_packages_uses_every_top_zone(tmp_path: Path) -> None:
    _zone(tmp_path / "intel-rapl:0", "psys", 10)
    zones, _ = rapl_zones(tmp_path)
    assert [z.name for z in zones] == ["psys"]


def test_rapl_wrap_without_range_is_a_data_error(tmp_path: Path) -> None:
    zone = _zone(tmp_path / "intel-rapl:0", "package-0", 1_000, max_range=None)
    meter = RaplMeter(rapl_zones(tmp_path)[0])
    meter.start()
    _set(zone, 10)
    with pytest.raises(DataError, match="went backwards"):
        meter.stop()


def test_energy_objective_reads_rapl(
    tmp_path: Path, tiny_target: EvalTarget, small_workload: Workload, unchanged: Callable[[], None]
) -> None:
    z = _fake_powercap(tmp_path)
    counter = {"uj": 1_000_000}

    def bump(*_: object) -> None:  # every forward call draws 1 mJ from package 0
        counter["uj"] += 1_000
        _set(z["pkg0"], counter["uj"])

    hook = tiny_target.model.register_forward_pre_hook(bump)
    try:
        result = EnergyObjective(small_workload, powercap_root=tmp_path).measure(tiny_target)
    finally:
        hook.remove()
    unchanged()
    assert result.method == "rapl"
    assert not result.estimated
    assert result.runs == small_workload.repeats
    assert result.energy_j == pytest.approx(small_workload.forward_passes * 1e-3)
    assert result.detail == "RAPL package-0 + package-1"


def test_unreadable_rapl_falls_back_to_the_estimate(tmp_path: Path) -> None:
    pkg = tmp_path / "intel-rapl:0"
    pkg.mkdir()
    (pkg / "name").write_text("package-0\n")
    (pkg / "energy_uj").mkdir()  # cannot be read as a file, like a root-only counter
    zones, why_not = rapl_zones(tmp_path)
    assert zones == []
    assert "energy_uj cannot be read" in why_not
    meter, _ = EnergyObjective(powercap_root=tmp_path).meter_for("cpu")
    assert isinstance(meter, CpuTimeMeter)


# ---- CPU-time estimate --------------------------------------------------------------------


def test_cpu_time_meter_is_cpu_seconds_times_watts() -> None:
    meter = CpuTimeMeter(15.0, reason="no RAPL", cpu_clock=_clock(10.0, 12.5), clock=_clock(0.0, 1.0))
    meter.start()
    reading = meter.stop()
    assert reading.energy_j == pytest.approx(37.5)
    assert reading.cpu_time_s == pytest.approx(2.5)
    assert reading.estimated
    assert reading.method == "cpu-time-estimate"
    assert reading.detail == "estimate: 2.5 s process CPU time x 15 W per core; RAPL unavailable: no RAPL"


def test_energy_objective_estimates_from_cpu_time(
    tmp_path: Path, tiny_target: EvalTarget, small_workload: Workload, unchanged: Callable[[], None]
) -> None:
    tiny_target.model.train()
    result = EnergyObjective(small_workload, watts_per_core=20.0, powercap_root=tmp_path / "absent").measure(
        tiny_target
    )
    assert tiny_target.model.training
    tiny_target.model.eval()
    unchanged()
    assert result.objective == "energy"
    assert result.method == "cpu-time-estimate"
    assert result.estimated
    assert result.device == "cpu"
    assert result.runs == small_workload.repeats
    assert result.cpu_time_s is not None and result.cpu_time_s >= 0
    assert result.energy_j == pytest.approx(result.cpu_time_s * 20.0)
    assert "20 W per core" in result.detail and "does not exist" in result.detail
    assert EnergyMeasurement.model_validate(result.model_dump()) == result


def test_min_time_keeps_running_past_the_repeats(tmp_path: Path, tiny_target: EvalTarget) -> None:
    workload = Workload(prefill_tokens=4, decode_tokens=1, warmup=0, repeats=1)
    result = EnergyObjective(workload, powercap_root=tmp_path, min_time_s=0.05).measure(tiny_target)
    assert result.runs >= 1
    assert result.latency_s * result.runs >= 0.05


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"watts_per_core": 0.0}, "watts_per_core must be positive"),
        ({"sample_interval_s": 0.0}, "sample_interval_s must be positive"),
        ({"min_time_s": -1.0}, "min_time_s must be >= 0"),
    ],
)
def test_bad_options_are_refused(options: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        EnergyObjective(**options)  # type: ignore[arg-type]


# ---- EDP and ratios -----------------------------------------------------------------------


def _record(energy_j: float, latency_s: float) -> EnergyMeasurement:
    return EnergyMeasurement(
        energy_j=energy_j,
        latency_s=latency_s,
        power_w=energy_j / latency_s,
        edp_js=edp(latency_s, energy_j),
        method="rapl",
        estimated=False,
        device="cpu",
        detail="RAPL package-0",
        runs=3,
        workload=Workload(),
    )


def test_edp_and_ratios() -> None:
    assert edp(0.5, 4.0) == pytest.approx(2.0)
    base, small = _record(4.0, 0.5), _record(2.0, 0.25)
    assert energy_ratio(small, base) == pytest.approx(0.5)
    assert edp_ratio(small, base) == pytest.approx(0.25)
    with pytest.raises(InvalidConfigError, match="positive baseline"):
        edp_ratio(small, _record(0.0, 0.5))


# ---- a real GPU ---------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_real_nvml_on_gpu(tiny_llama) -> None:  # type: ignore[no-untyped-def]
    model = copy.deepcopy(tiny_llama.model).to("cuda")
    target = EvalTarget(model=model, tokenizer=tiny_llama.tokenizer, device="cuda")
    result = EnergyObjective(Workload(prefill_tokens=64, decode_tokens=16), min_time_s=0.5).measure(target)
    assert result.method in ("nvml-energy-counter", "nvml-power-sampling")
    assert not result.estimated
    assert result.energy_j > 0
    assert 1.0 < result.power_w < 2000.0
