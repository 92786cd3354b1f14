"""Calibration statistics on disk: one pass per (model fingerprint, settings), across processes.

Files live under ``space.env.cache_dir() / "calibration"`` as one safetensors file per
key (float64 XᵀX, mean |x|, Σx per shared input, the sharing map in its metadata).
A process that finds no file takes an exclusive lock (``fcntl.flock`` on a sibling
``.lock`` file), checks again, collects and writes the file atomically (temporary name,
fsync, rename); every other process waits on the lock and then reads that file. So N
workers of one study run the pass once, and a crash mid-pass leaves no file behind.
Tensors are read lazily, one shared input at a time.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dse.calibration import Calibration, CalibrationSettings, InputStats, collect
from space.errors import StorageError

if TYPE_CHECKING:
    from dse.models import LoadedModel

__all__ = ["calibration_dir", "load_or_collect", "PASSES"]

#: Passes run by this process (tests count them across processes through the return value).
PASSES = {"count": 0}


def calibration_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The ``calibration`` folder of a ``--cache-dir`` (default $DSE_CACHE_DIR, else platform)."""
    from space.env import cache_dir as resolve

    return resolve(cache_dir) / "calibration"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path, key: str) -> Calibration | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types; the file is collected again
        print(f"calibration file {path} is unreadable ({exc}); collecting again", file=sys.stderr)
        path.unlink(missing_ok=True)
        return None
    groups = {
        (int(layer), tensor): (int(lead[0]), str(lead[1]))
        for layer, tensor, lead in json.loads(meta["groups"])
    }

    def load(layer: int, tensor: str) -> InputStats:
        prefix = f"{layer}.{tensor}."
        with safe_open(str(path), framework="pt") as handle:
            return InputStats(handle.get_tensor(prefix + "gram"), handle.get_tensor(prefix + "abs_mean"),
                              handle.get_tensor(prefix + "total"), int(meta[prefix + "tokens"]))

    return Calibration(key=key, fingerprint=meta["fingerprint"], tokens=int(meta["tokens"]),
                       seconds=float(meta["seconds"]), groups=groups, loader=load)


def _write(path: Path, calibration: Calibration) -> None:
    from safetensors.torch import save_file

    tensors = {}
    meta = {"fingerprint": calibration.fingerprint, "tokens": str(calibration.tokens),
            "seconds": repr(calibration.seconds),
            "groups": json.dumps([[layer, tensor, list(lead)]
                                  for (layer, tensor), lead in calibration.groups.items()])}
    for (layer, tensor) in set(calibration.groups.values()):
        stats = calibration.stats(layer, tensor)
        prefix = f"{layer}.{tensor}."
        tensors[prefix + "gram"] = stats.gram.contiguous()
        tensors[prefix + "abs_mean"] = stats.abs_mean.contiguous()
        tensors[prefix + "total"] = stats.total.contiguous()
        meta[prefix + "tokens"] = str(stats.tokens)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_or_collect(
    loaded: LoadedModel, settings: CalibrationSettings, *,
    cache_dir: str | os.PathLike[str] | None = None, progress: bool = True,
) -> tuple[Calibration, bool]:
    """The calibration of ``loaded`` under ``settings``: from disk, or one new pass.

    Returns:
        ``(calibration, collected)``: whether this call ran the pass.

    Raises:
        CalibrationError: bad data or a model that cannot be hooked (one line).
        StorageError: the cache directory cannot be created.
    """
    key = settings.stats_key(loaded.fingerprint)
    folder = calibration_dir(cache_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create the calibration cache {folder}: {exc.strerror or exc}; "
                           f"pass --cache-dir (or set DSE_CACHE_DIR) to a writable directory") from None
    path = folder / f"{key}.safetensors"
    found = _read(path, key) if path.is_file() else None
    if found is not None:
        found.settings = settings
        return found, False
    with _locked(folder / f"{key}.lock"):
        found = _read(path, key) if path.is_file() else None
        if found is not None:
            found.settings = settings
            return found, False
        calibration = collect(loaded, settings, key, progress=progress)
        PASSES["count"] += 1
        try:
            _write(path, calibration)
        except OSError as exc:
            print(f"calibration: cannot store {path} ({exc}); keeping it in memory only",
                  file=sys.stderr)
        return calibration, True


