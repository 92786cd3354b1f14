"""A trial's efficiency: latency, energy and memory of the installed γ against the original modules.

Ratios come from paired ABBA runs that switch the same model between its original and
decomposed modules (:func:`objectives.efficiency.compare_paired`), so both sides share the
process, threads and thermal state; the hardware identity keys the memo with them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from dse.records import EfficiencyRecord
from objectives.efficiency import PairedRatios
from objectives.registry import make

if TYPE_CHECKING:
    from dse.models import LoadedModel
    from dse.records import MeasurementSettings
    from objectives.efficiency import PairedComparison

__all__ = ["TRIAL_EFFICIENCY", "hardware_identity", "measure_efficiency", "paired_efficiency", "ratio"]

#: What a trial keeps of a paired comparison: the ratios and how the runs went (not the baselines).
TRIAL_EFFICIENCY = set(PairedRatios.model_fields) | {"repeats", "noisy", "noise", "threads", "standins"}


@contextlib.contextmanager
def _module_states(loaded: LoadedModel) -> Iterator[Callable[[str], None]]:
    """Switch an applied model between its original and decomposed modules; ends decomposed."""
    compressed = {path: loaded.model.get_submodule(path) for path in loaded.originals}
    originals = dict(loaded.originals)

    def use(state: str) -> None:
        from dse.surgery import set_module

        for path, module in (originals if state == "baseline" else compressed).items():
            set_module(loaded.model, path, module)

    try:
        yield use
    finally:
        use("compressed")


def ratio(value: float | None, base: float | None) -> float | None:
    """``value / base``, or None when either is missing or the base is not positive."""
    if value is None or base is None or base <= 0:
        return None
    return value / base


def hardware_identity(device: str, *, threads: int, energy_method: str | None) -> dict[str, Any]:
    """What a latency or energy ratio depends on besides the model: keys the memo with it."""
    import platform

    import torch

    if device.startswith("cuda"):
        processor = torch.cuda.get_device_name(device)
    else:
        processor = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in open("/proc/cpuinfo", encoding="utf-8"):  # noqa: SIM115 - read until found
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
    return {"processor": processor, "torch": torch.__version__, "threads": threads, "energy_method": energy_method}


def measure_efficiency(loaded: LoadedModel, settings: MeasurementSettings) -> EfficiencyRecord:
    """Latency, energy and memory of the model as it is now (for information)."""
    target = loaded.target()
    record = EfficiencyRecord()
    workload = settings.workload
    if settings.measure_latency:
        latency = make("latency", workload).measure(target)
        record.latency_s = latency.median_s
        record.latency_spread_s = latency.spread_s
        record.latency_method = latency.method
    if settings.measure_energy:
        energy = make("energy", workload).measure(target)
        record.energy_j = energy.energy_j
        record.energy_method = energy.method
        record.energy_estimated = energy.estimated
        if record.latency_s is None:
            record.latency_s = energy.latency_s
    if settings.measure_memory:
        memory = make("memory", workload).measure(target)
        record.memory_bytes = memory.model_bytes
        record.peak_memory_bytes = memory.peak_bytes
        record.memory_method = memory.method
    return record


def paired_efficiency(loaded: LoadedModel,
                      s: MeasurementSettings) -> tuple[PairedComparison | None, int | None, int | None]:
    """Ratios of the installed γ to the original from ABBA runs; memory after and before."""
    from objectives.efficiency import compare_paired
    from objectives.memory import model_memory

    target = loaded.target()
    comparison = None
    with _module_states(loaded) as use:
        use("baseline")
        _, base_params, base_buffers = model_memory(loaded.model)
        if s.measure_latency or s.measure_energy:
            comparison = compare_paired(
                target, use, workload=s.workload,
                latency=make("latency", s.workload) if s.measure_latency else None,
                energy=make("energy", s.workload) if s.measure_energy else None,
                width=s.ratio_width, min_blocks=s.workload.repeats, max_blocks=s.max_repeats,
                threads=s.threads,
            )
        use("compressed")
        memory = make("memory", s.workload.model_copy(update={"warmup": 0, "repeats": 1})).measure(target) \
            if s.measure_memory else None
    if memory is None:
        return comparison, None, None
    return comparison, memory.model_bytes, base_params + base_buffers
