"""Energy meters: NVML's energy counter, NVML power sampling, RAPL, and a CPU-time estimate.

Each meter reads one source between ``start`` and ``stop`` (see :mod:`objectives.energy`
for when each is used, and the objective that runs the workload under one). Split from
the objective so each source's quirks (counter wrap-around, subzones, sampling) read on
their own.
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
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from space.errors import DataError, InvalidConfigError

__all__ = [
    "Clock",
    "CpuTimeMeter",
    "EnergyMeter",
    "EnergyMethod",
    "MeterReading",
    "NvmlCounterMeter",
    "NvmlPowerMeter",
    "RaplMeter",
    "RaplZone",
    "load_nvml",
    "nvml_handle",
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


def load_nvml() -> ModuleType:
    """Pynvml (the ``nvidia-ml-py`` package).

    Raises:
        DataError: it is not installed.
    """
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise DataError(f"GPU energy needs NVML's Python bindings: pip install nvidia-ml-py ({exc})") from None


def nvml_handle(nvml: Any, device: str, index: int | None) -> Any:
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
