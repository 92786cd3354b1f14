"""Memory of a model: its parameters and buffers, and the peak while running the workload.

Parameter and buffer bytes are exact and are what decomposition saves. The peak during
a workload pass (after the warm-up passes) is measured as well as the platform allows:

- ``cuda-max-allocated``: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats``; counts live tensors only, not the caching allocator's
  reserve, so it does not depend on what ran before.
- ``vmhwm-reset``: Linux CPU. Writing ``5`` to ``/proc/self/clear_refs`` resets the
  process's peak RSS (``VmHWM``) to its current RSS, so ``VmHWM`` after the pass is the
  true peak of that pass. ``ru_maxrss`` is not used because it never decreases: it
  would show growth only above the largest peak the process ever had.
- ``rss-sampling``: where ``clear_refs`` cannot be written, RSS from
  ``/proc/self/statm`` sampled every millisecond in a thread (may miss short spikes).

On CPU, memory freed by earlier passes stays in the C allocator's heap and would be
reused without growing RSS (measured here: 0 MiB growth for SmolLM2-135M's pass).
So the heap is first handed back to the OS with glibc's ``malloc_trim(0)``; the pass
then faults its pages in again and the growth is its working memory (~39 MiB for
SmolLM2-135M at the default workload: prefill logits, KV cache, activations), give or
take allocator fragmentation. Without glibc the growth is a lower bound, and
``detail`` says so.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from objectives.base import EvalTarget, Measurement, Objective
from objectives.workload import Workload, check_device, eval_mode, run_workload, synchronize, workload_input_ids
from space.errors import DataError

if TYPE_CHECKING:
    import torch

__all__ = ["MemoryMeasurement", "MemoryObjective", "model_memory"]

MemoryMethod = Literal["cuda-max-allocated", "vmhwm-reset", "rss-sampling"]

_PROC_STATUS = Path("/proc/self/status")
_PROC_STATM = Path("/proc/self/statm")
_CLEAR_REFS = Path("/proc/self/clear_refs")


_HOW: dict[str, str] = {
    "vmhwm-reset": "peak RSS (VmHWM) of one pass, reset via /proc/self/clear_refs",
    "rss-sampling": "peak RSS of one pass, sampled every 1 ms from /proc/self/statm",
}


class MemoryMeasurement(Measurement):
    """Bytes of the model and of one workload pass.

    ``params`` counts unique parameters (tied weights once), ``model_bytes`` =
    ``param_bytes + buffer_bytes``. ``peak_bytes`` is the absolute peak during the pass
    (GPU: allocated tensors, weights included; CPU: the process's RSS) and
    ``peak_growth_bytes`` its rise above the level just before the pass (GPU:
    activations and KV cache; CPU: RSS growth). ``detail`` says how the peak was taken.
    """

    objective: Literal["memory"] = "memory"
    params: int
    param_bytes: int
    buffer_bytes: int
    model_bytes: int
    peak_bytes: int
    peak_growth_bytes: int
    method: MemoryMethod
    device: str
    detail: str
    workload: Workload


def _trim_heap() -> bool:
    """Return freed heap pages to the OS (glibc), so RSS growth counts the pass's memory."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    trim(0)
    return True


def model_memory(model: torch.nn.Module) -> tuple[int, int, int]:
    """``(params, param_bytes, buffer_bytes)`` over unique tensors (tied weights count once)."""
    params = 0
    param_bytes = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        params += p.numel()
        param_bytes += p.numel() * p.element_size()
    buffer_bytes = 0
    for b in model.buffers():
        if id(b) in seen:
            continue
        seen.add(id(b))
        buffer_bytes += b.numel() * b.element_size()
    return params, param_bytes, buffer_bytes


def _status_bytes(field: str) -> int:
    for line in _PROC_STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            value, unit = line.split()[1:3]
            if unit != "kB":
                raise DataError(f"unexpected unit {unit!r} for {field} in {_PROC_STATUS}")
            return int(value) * 1024
    raise DataError(f"{field} missing from {_PROC_STATUS}")


def _statm_rss_bytes() -> int:
    return int(_PROC_STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _can_reset_hwm() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        _status_bytes("VmHWM")
    except (OSError, DataError):
        return False
    return True


class _RssSampler:
    """Largest RSS seen by a thread that reads ``/proc/self/statm`` every ``interval_s``."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.peak = _statm_rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dse-rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, _statm_rss_bytes())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _statm_rss_bytes())


class MemoryObjective(Objective):
    """Model bytes, and the peak memory of one workload pass after the warm-up passes."""

    name: ClassVar[str] = "memory"

    def __init__(self, workload: Workload | None = None) -> None:
        self.workload = workload if workload is not None else Workload()

    def measure(self, target: EvalTarget) -> MemoryMeasurement:
        """Count the model's tensors, then run warm-ups and one measured pass.

        Raises:
            DataError: on a CPU without ``/proc`` (the peak cannot be measured).
        """
        device = target.device
        check_device(device)
        params, param_bytes, buffer_bytes = model_memory(target.model)
        input_ids = workload_input_ids(target, self.workload)
        with eval_mode(target.model):
            for _ in range(self.workload.warmup):
                run_workload(target, self.workload, input_ids=input_ids)
            if device.startswith("cuda"):
                peak, growth, method = self._cuda_peak(target, input_ids)
                detail = "torch.cuda.max_memory_allocated over one pass after reset_peak_memory_stats"
            else:
                trimmed = _trim_heap()
                peak, growth, method = self._cpu_peak(target, input_ids)
                detail = f"{_HOW[method]}; " + (
                    "heap trimmed with malloc_trim(0) first" if trimmed else "no glibc to trim the heap: a lower bound"
                )
        return MemoryMeasurement(
            params=params,
            param_bytes=param_bytes,
            buffer_bytes=buffer_bytes,
            model_bytes=param_bytes + buffer_bytes,
            peak_bytes=peak,
            peak_growth_bytes=growth,
            method=method,
            device=device,
            detail=detail,
            workload=self.workload,
        )

    def _cuda_peak(self, target: EvalTarget, input_ids: torch.Tensor) -> tuple[int, int, MemoryMethod]:
        import torch

        device = target.device
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run_workload(target, self.workload, input_ids=input_ids)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        return peak, max(0, peak - before), "cuda-max-allocated"

    def _cpu_peak(self, target: EvalTarget, input_ids: torch.Tensor) -> tuple[int, int, MemoryMethod]:
        if not _PROC_STATM.exists():
            raise DataError("peak memory on CPU needs Linux /proc (not found); measure on Linux or on a GPU")
        if _can_reset_hwm():
            before = _status_bytes("VmRSS")
            run_workload(target, self.workload, input_ids=input_ids)
            peak = _status_bytes("VmHWM")
            return peak, max(0, peak - before), "vmhwm-reset"
        before = _statm_rss_bytes()
        with _RssSampler() as sampler:
            run_workload(target, self.workload, input_ids=input_ids)
        return sampler.peak, max(0, sampler.peak - before), "rss-sampling"
