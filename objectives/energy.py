"""Energy of the fixed workload, and the paper's objective EDP = latency × energy.

Where energy comes from depends on the machine, and the record always says which:

- ``nvml-energy-counter``: on a GPU, the difference of NVML's total-energy counter
  (millijoules since the driver loaded; Volta and newer) across the measured passes.
- ``nvml-power-sampling``: on a GPU whose counter is unsupported, board power sampled
  in a background thread and integrated with the trapezoid rule (the paper's method).
- ``rapl``: on a Linux CPU whose powercap counters are readable, the sum of the
  package zones' ``energy_uj`` differences (subzones are part of their package and not
  added again; a counter that wrapped is corrected with ``max_energy_range_uj``).
- ``cpu-time-estimate``: otherwise, process CPU seconds × a watts-per-core figure;
  ``estimated`` is true and only ratios between models measured alike mean anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

from objectives.base import EvalTarget, Measurement, Objective
from objectives.energy_meters import (
    CpuTimeMeter,
    EnergyMeter,
    EnergyMethod,
    MeterReading,
    NvmlCounterMeter,
    NvmlPowerMeter,
    RaplMeter,
    RaplZone,
    load_nvml,
    nvml_handle,
    rapl_zones,
)
from objectives.workload import Workload, check_device, eval_mode, run_workload, synchronize, workload_input_ids
from space.errors import DataError, InvalidConfigError

# The meters live in objectives.energy_meters; they are named here too, beside the objective.
__all__ = [
    "CpuTimeMeter",
    "EnergyMeasurement",
    "EnergyMeter",
    "EnergyObjective",
    "MeterReading",
    "NvmlCounterMeter",
    "NvmlPowerMeter",
    "RaplMeter",
    "RaplZone",
    "edp",
    "edp_ratio",
    "energy_ratio",
    "rapl_zones",
]


# ---- the objective ----------------------------------------------------------------------


class EnergyMeasurement(Measurement):
    """Energy per workload pass, how it was obtained, and EDP.

    ``latency_s`` is the wall time per pass over the metered window (the energy's own
    time base), ``power_w`` the mean power over it, ``edp_js`` = ``latency_s × energy_j``.
    ``cpu_time_s`` (per pass) is set for the CPU-time estimate only.
    """

    objective: Literal["energy"] = "energy"
    energy_j: float
    latency_s: float
    power_w: float
    edp_js: float
    method: EnergyMethod
    estimated: bool
    device: str
    detail: str
    runs: int
    cpu_time_s: float | None = None
    workload: Workload


class EnergyObjective(Objective):
    """Joules per pass of the workload, from the best source this machine offers.

    Args:
        workload: the passes to run; ``repeats`` of them are metered after ``warmup``.
        watts_per_core: the power one busy core is assumed to draw, for the CPU-time
            estimate only.
        nvml: an NVML module (``pynvml``); injectable so tests can fake a GPU.
        nvml_index: the NVML device index; by default the torch device is matched by UUID.
        powercap_root: where to look for RAPL zones.
        sample_interval_s: power sampling period where the energy counter is unsupported.
        min_time_s: keep running passes past ``repeats`` until this much time is metered,
            because NVML's counter and power readings refresh only every 20-100 ms.
    """

    name: ClassVar[str] = "energy"

    def __init__(
        self,
        workload: Workload | None = None,
        *,
        watts_per_core: float = 15.0,
        nvml: ModuleType | Any | None = None,
        nvml_index: int | None = None,
        powercap_root: Path = Path("/sys/class/powercap"),
        sample_interval_s: float = 0.05,
        min_time_s: float = 0.0,
    ) -> None:
        if not watts_per_core > 0:
            raise InvalidConfigError(f"watts_per_core must be positive, got {watts_per_core}")
        if not sample_interval_s > 0:
            raise InvalidConfigError(f"sample_interval_s must be positive, got {sample_interval_s}")
        if min_time_s < 0:
            raise InvalidConfigError(f"min_time_s must be >= 0, got {min_time_s}")
        self.workload = workload if workload is not None else Workload()
        self.watts_per_core = watts_per_core
        self.nvml = nvml
        self.nvml_index = nvml_index
        self.powercap_root = Path(powercap_root)
        self.sample_interval_s = sample_interval_s
        self.min_time_s = min_time_s

    def meter_for(self, device: str) -> tuple[EnergyMeter, Callable[[], None]]:
        """The meter this device gets, and what to call after it has stopped.

        Raises:
            DataError: a GPU whose NVML cannot be loaded or initialised, or that
                reports neither energy nor power.
        """
        if device.startswith("cuda"):
            return self._nvml_meter(device)
        zones, why_not = rapl_zones(self.powercap_root)
        if zones:
            return RaplMeter(zones), _nothing
        return CpuTimeMeter(self.watts_per_core, reason=why_not), _nothing

    def _nvml_meter(self, device: str) -> tuple[EnergyMeter, Callable[[], None]]:
        nvml = self.nvml if self.nvml is not None else load_nvml()
        nvml_error: type[BaseException] = getattr(nvml, "NVMLError", Exception)
        not_supported: type[BaseException] = getattr(nvml, "NVMLError_NotSupported", nvml_error)
        try:
            nvml.nvmlInit()
        except nvml_error as exc:
            raise DataError(f"GPU energy needs NVML, which failed to initialise: {exc}") from None
        try:
            handle = nvml_handle(nvml, device, self.nvml_index)
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                meter: EnergyMeter = NvmlCounterMeter(nvml, handle)
            except not_supported:
                nvml.nvmlDeviceGetPowerUsage(handle)
                meter = NvmlPowerMeter(nvml, handle, interval_s=self.sample_interval_s)
        except nvml_error as exc:
            nvml.nvmlShutdown()
            raise DataError(f"NVML reports neither energy nor power for {device}: {exc}") from None
        return meter, nvml.nvmlShutdown

    def measure(self, target: EvalTarget) -> EnergyMeasurement:
        """Meter ``repeats`` passes (more if ``min_time_s`` asks) after the warm-up ones."""
        check_device(target.device)
        meter, release = self.meter_for(target.device)
        try:
            return self.measure_with(target, meter)
        finally:
            release()

    def measure_with(self, target: EvalTarget, meter: EnergyMeter) -> EnergyMeasurement:
        """Run the workload under a given meter; :meth:`measure` picks the meter itself."""
        device = target.device
        workload = self.workload
        input_ids = workload_input_ids(target, workload)
        with eval_mode(target.model):
            for _ in range(workload.warmup):
                run_workload(target, workload, input_ids=input_ids)
            synchronize(device)
            runs = 0
            began = time.perf_counter()
            meter.start()
            try:
                while True:
                    run_workload(target, workload, input_ids=input_ids)
                    runs += 1
                    if runs >= workload.repeats:
                        synchronize(device)
                        if time.perf_counter() - began >= self.min_time_s:
                            break
            finally:
                synchronize(device)
                reading = meter.stop()
        energy = reading.energy_j / runs
        latency = reading.duration_s / runs
        return EnergyMeasurement(
            energy_j=energy,
            latency_s=latency,
            power_w=reading.energy_j / reading.duration_s if reading.duration_s > 0 else 0.0,
            edp_js=edp(latency, energy),
            method=reading.method,
            estimated=reading.estimated,
            device=device,
            detail=reading.detail,
            runs=runs,
            cpu_time_s=reading.cpu_time_s / runs if reading.cpu_time_s is not None else None,
            workload=workload,
        )


def _nothing() -> None:
    return None


def edp(latency_s: float, energy_j: float) -> float:
    """Energy-delay product in joule-seconds: the paper's single efficiency objective."""
    return latency_s * energy_j


def _positive(value: float, what: str) -> float:
    if not value > 0:
        raise InvalidConfigError(f"a {what} ratio needs a positive baseline, got {value}")
    return value


def energy_ratio(compressed: EnergyMeasurement, baseline: EnergyMeasurement) -> float:
    """Energy per pass of the compressed model over the baseline's (below 1 saves energy)."""
    return compressed.energy_j / _positive(baseline.energy_j, "energy")


def edp_ratio(compressed: EnergyMeasurement, baseline: EnergyMeasurement) -> float:
    """EDP of the compressed model over the baseline's; compare only records of one method."""
    return compressed.edp_js / _positive(baseline.edp_js, "EDP")
