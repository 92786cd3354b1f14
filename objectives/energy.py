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

import abc
import importlib
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from objectives.base import EvalTarget, Measurement, Objective
from objectives.workload import Workload, check_device, eval_mode, run_workload, synchronize, workload_input_ids
from space.errors import DataError, InvalidConfigError

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

EnergyMethod = Literal["nvml-energy-counter", "nvml-power-sampling", "rapl", "cpu-time-estimate"]
Clock = Callable[[], float]


class MeterReading(BaseModel):
    """What a meter saw between ``start()`` and ``stop()``: totals, not per pass."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    energy_j: float
    duration_s: float
    method: EnergyMethod
    estimated: bool
    detail: str
    cpu_time_s: float | None = None


class EnergyMeter(abc.ABC):
    """Measures the energy of whatever runs between ``start()`` and ``stop()``.

    A meter is used once: ``start()`` then ``stop()``; ``stop()`` also releases what
    ``start()`` acquired (a sampling thread), so call it on errors too.
    """

    @abc.abstractmethod
    def start(self) -> None:
        """Called right before the measured passes (after warm-up and synchronisation)."""

    @abc.abstractmethod
    def stop(self) -> MeterReading:
        """Called right after the measured passes have finished on the device."""


# ---- GPU: NVML --------------------------------------------------------------------------


class NvmlCounterMeter(EnergyMeter):
    """Difference of ``nvmlDeviceGetTotalEnergyConsumption`` (mJ) around the passes."""

    def __init__(self, nvml: Any, handle: Any, *, clock: Clock = time.perf_counter) -> None:
        self._nvml, self._handle, self._clock = nvml, handle, clock
        self._mj0 = 0
        self._t0 = 0.0

    def start(self) -> None:
        self._mj0 = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        self._t0 = self._clock()

    def stop(self) -> MeterReading:
        mj1 = int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
        duration = self._clock() - self._t0
        return MeterReading(
            energy_j=(mj1 - self._mj0) / 1000.0,
            duration_s=duration,
            method="nvml-energy-counter",
            estimated=False,
            detail=f"NVML total-energy counter {self._mj0} -> {mj1} mJ",
        )


class NvmlPowerMeter(EnergyMeter):
    """Board power (``nvmlDeviceGetPowerUsage``, mW) sampled in a thread, integrated.

    Samples are taken at ``start()``, every ``interval_s`` in between and at ``stop()``,
    so the integral spans exactly the measured window: energy = ∫ P dt by trapezoids.
    """

    def __init__(self, nvml: Any, handle: Any, *, interval_s: float = 0.05, clock: Clock = time.perf_counter) -> None:
        self._nvml, self._handle, self._interval, self._clock = nvml, handle, interval_s, clock
        self._samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def _sample(self) -> None:
        watts = self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0
        self._samples.append((self._clock(), watts))

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self._interval):
                self._sample()
        except BaseException as exc:  # noqa: BLE001 - re-raised in stop(), on the caller's thread.
            self._error = exc

    def start(self) -> None:
        self._samples.clear()
        self._stop.clear()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="dse-nvml-power", daemon=True)
        self._thread.start()

    def stop(self) -> MeterReading:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        self._sample()
        samples = sorted(self._samples)
        energy = sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in itertools.pairwise(samples))
        duration = samples[-1][0] - samples[0][0]
        return MeterReading(
            energy_j=energy,
            duration_s=duration,
            method="nvml-power-sampling",
            estimated=False,
            detail=(
                f"NVML power sampled {len(samples)} times every {self._interval:g} s and integrated "
                "(energy counter not supported on this GPU)"
            ),
        )


def _load_nvml() -> ModuleType:
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise DataError(f"GPU energy needs NVML's Python bindings: pip install nvidia-ml-py ({exc})") from None


def _nvml_handle(nvml: Any, device: str, index: int | None) -> Any:
    """The NVML handle of a torch CUDA device.

    NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``, while CUDA's
    default order is fastest-first, so the device is matched by UUID when torch can
    tell it, else by torch's own mapping of visible devices.
    """
    if index is not None:
        return nvml.nvmlDeviceGetHandleByIndex(index)
    import torch

    nvml_error = getattr(nvml, "NVMLError", Exception)
    if torch.cuda.is_available():
        uuid = str(getattr(torch.cuda.get_device_properties(device), "uuid", ""))
        if uuid:
            try:
                return nvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
            except (nvml_error, AttributeError):
                pass
        return nvml.nvmlDeviceGetHandleByIndex(torch.cuda._get_nvml_device_index(device))
    return nvml.nvmlDeviceGetHandleByIndex(torch.device(device).index or 0)


# ---- CPU: RAPL through powercap ---------------------------------------------------------

_TOP_ZONE = re.compile(r"^intel-rapl:(\d+)$")


@dataclass(frozen=True)
class RaplZone:
    """One top-level powercap zone (a CPU package, or psys) and its counter's range."""

    path: Path
    name: str
    max_energy_range_uj: int | None

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text().strip())


def rapl_zones(root: Path = Path("/sys/class/powercap")) -> tuple[list[RaplZone], str]:
    """The zones whose counters add up to the CPUs' energy, or none and the reason why.

    Only top-level zones count (``intel-rapl:N``): subzones (``intel-rapl:N:M``: core,
    uncore, dram) lie inside their package, and ``intel-rapl-mmio`` repeats a package.
    When package zones exist, ``psys`` (the whole platform, packages included) is left
    out too. A zone must be readable: since Linux 5.10 ``energy_uj`` is root-only.
    """
    if not root.is_dir():
        return [], f"{root} does not exist"
    tops = sorted((p for p in root.iterdir() if _TOP_ZONE.match(p.name)), key=lambda p: int(p.name.split(":")[1]))
    if not tops:
        return [], f"no intel-rapl:N zone under {root}"
    zones = []
    for path in tops:
        name_file = path / "name"
        name = name_file.read_text().strip() if name_file.is_file() else path.name
        range_file = path / "max_energy_range_uj"
        max_range = int(range_file.read_text().strip()) if range_file.is_file() else None
        zones.append(RaplZone(path=path, name=name, max_energy_range_uj=max_range))
    packages = [z for z in zones if z.name.startswith("package")]
    chosen = packages or zones
    for zone in chosen:
        try:
            zone.read_uj()
        except PermissionError:
            return [], f"{zone.path / 'energy_uj'} is not readable (root-only on this kernel)"
        except (OSError, ValueError) as exc:
            return [], f"{zone.path / 'energy_uj'} cannot be read: {exc}"
    return chosen, ""


class RaplMeter(EnergyMeter):
    """Sum over package zones of the ``energy_uj`` difference, wrap-arounds corrected."""

    def __init__(self, zones: list[RaplZone], *, clock: Clock = time.perf_counter) -> None:
        if not zones:
            raise InvalidConfigError("a RAPL meter needs at least one powercap zone")
        self._zones, self._clock = zones, clock
        self._uj0: list[int] = []
        self._t0 = 0.0

    def start(self) -> None:
        self._uj0 = [zone.read_uj() for zone in self._zones]
        self._t0 = self._clock()

    def stop(self) -> MeterReading:
        uj1 = [zone.read_uj() for zone in self._zones]
        duration = self._clock() - self._t0
        total_uj = 0
        wraps = 0
        for zone, before, after in zip(self._zones, self._uj0, uj1, strict=True):
            delta = after - before
            if delta < 0:
                if zone.max_energy_range_uj is None:
                    raise DataError(f"RAPL counter {zone.path} went backwards and has no max_energy_range_uj")
                delta += zone.max_energy_range_uj
                wraps += 1
            total_uj += delta
        names = " + ".join(zone.name for zone in self._zones)
        return MeterReading(
            energy_j=total_uj / 1e6,
            duration_s=duration,
            method="rapl",
            estimated=False,
            detail=f"RAPL {names}" + (f" ({wraps} counter wrap-around corrected)" if wraps else ""),
        )


# ---- CPU: estimate from process CPU time ------------------------------------------------


class CpuTimeMeter(EnergyMeter):
    """Process CPU seconds (all threads) × ``watts_per_core``: an estimate, not a reading."""

    def __init__(
        self,
        watts_per_core: float,
        *,
        reason: str = "",
        cpu_clock: Clock = time.process_time,
        clock: Clock = time.perf_counter,
    ) -> None:
        self._watts, self._reason, self._cpu_clock, self._clock = watts_per_core, reason, cpu_clock, clock
        self._cpu0 = 0.0
        self._t0 = 0.0

    def start(self) -> None:
        self._cpu0 = self._cpu_clock()
        self._t0 = self._clock()

    def stop(self) -> MeterReading:
        cpu = self._cpu_clock() - self._cpu0
        duration = self._clock() - self._t0
        why = f"; RAPL unavailable: {self._reason}" if self._reason else ""
        return MeterReading(
            energy_j=cpu * self._watts,
            duration_s=duration,
            method="cpu-time-estimate",
            estimated=True,
            detail=f"estimate: {cpu:.4g} s process CPU time x {self._watts:g} W per core{why}",
            cpu_time_s=cpu,
        )


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
        nvml = self.nvml if self.nvml is not None else _load_nvml()
        nvml_error: type[BaseException] = getattr(nvml, "NVMLError", Exception)
        not_supported: type[BaseException] = getattr(nvml, "NVMLError_NotSupported", nvml_error)
        try:
            nvml.nvmlInit()
        except nvml_error as exc:
            raise DataError(f"GPU energy needs NVML, which failed to initialise: {exc}") from None
        try:
            handle = _nvml_handle(nvml, device, self.nvml_index)
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
