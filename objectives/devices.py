"""Where a model runs: the one check of a ``--device`` value.

Study definitions, model loading and every measurement accept the same names (``cpu``,
``cuda``, ``cuda:N``) and refuse the rest with the same line; a CUDA device that this
machine lacks is refused before any work starts. The name check imports nothing heavy,
so a pydantic validator can call it.
"""

from __future__ import annotations

import re

from space.errors import InvalidConfigError

__all__ = ["DEVICE_NAMES", "check_device", "check_device_name"]

DEVICE_NAMES = "cpu, cuda, cuda:N"
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_device_name(device: str) -> str:
    """``device`` when it is ``cpu``, ``cuda`` or ``cuda:N`` (whether or not it exists here).

    Raises:
        InvalidConfigError: any other name.
    """
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise InvalidConfigError(f"unknown device {device!r}; allowed: {DEVICE_NAMES}")
    return device


def check_device(device: str) -> None:
    """Refuse a device name that is malformed or a CUDA device this machine lacks, in one line.

    Raises:
        InvalidConfigError: ``device`` is neither ``cpu`` nor a CUDA device that exists.
    """
    check_device_name(device)
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise InvalidConfigError(
            f"--device {device} was asked for, but no CUDA device is available: use --device cpu"
        )
    index = int(device.partition(":")[2] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise InvalidConfigError(
            f"--device {device} does not exist: {count} CUDA device(s) are visible, cuda:0 .. cuda:{count - 1}"
        )
