"""Where lowrank-dse keeps its caches and finds benchmark data.

Both ``dse`` and ``objectives`` need these answers, and ``space`` is the one package
they both may import.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir", "default_data_dir", "resolve_data_dir"]

_CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``explicit``, else ``$DSE_CACHE_DIR``, else the platform cache dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("DSE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("lowrank-dse"))


def default_data_dir() -> Path | None:
    """``$DSE_DATA_DIR``, else ``../shared/data`` beside the checkout when it exists."""
    env = os.environ.get("DSE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    beside = _CHECKOUT_ROOT.parent / "shared" / "data"
    return beside if beside.is_dir() else None


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The benchmark data directory: ``explicit`` (``--data-dir``) first, then the default."""
    if explicit:
        return Path(explicit).expanduser()
    return default_data_dir()
