"""``dse cache``: inspect or clear the factor cache (``<cache dir>/factors``).

Neither command imports torch: the cache's index is SQLite and its info is pydantic.
"""

from __future__ import annotations

from typing import Any

import click

from dse.cli._common import emit_json, json_option, print_table

__all__ = ["cache"]


def _cache_dir_option(func: Any) -> Any:
    return click.option(
        "--cache-dir", default=None, metavar="DIR",
        help="Cache directory; the factors live in its factors/ folder "
             "(default: $DSE_CACHE_DIR, else the platform cache dir).",
    )(func)


def _size(nbytes: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if nbytes < 1024 or unit == "GiB":
            return f"{nbytes} B" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024  # type: ignore[assignment]
    return f"{nbytes} B"


@click.group(help="Inspect or clear the factor cache (decomposed weights, reused across runs).")
def cache() -> None:
    """The ``cache`` command group."""


@cache.command(help="Where the factor cache is, how full, and by which models.")
@_cache_dir_option
@json_option
def info(cache_dir: str | None, as_json: bool) -> None:
    from dse.cache import FactorCache

    report = FactorCache.for_cache_dir(cache_dir).info()
    if as_json:
        emit_json(report.model_dump(mode="json"))
        return
    click.echo(f"factor cache: {report.root}")
    click.echo(f"{report.entries} entries, {_size(report.bytes)} of {_size(report.max_bytes)}")
    if report.models:
        rows = [(fp, usage.label or "", usage.entries, _size(usage.bytes))
                for fp, usage in report.models.items()]
        print_table(None, ["model fingerprint", "label", "entries", "size"], rows)


@cache.command(help="Delete every cached factor (the cache fills again on the next decomposition).")
@_cache_dir_option
@json_option
def clear(cache_dir: str | None, as_json: bool) -> None:
    from dse.cache import FactorCache

    removed = FactorCache.for_cache_dir(cache_dir).clear()
    if as_json:
        emit_json({"root": str(removed.root), "removed_entries": removed.entries,
                   "removed_bytes": removed.bytes})
        return
    click.echo(f"removed {removed.entries} entries ({_size(removed.bytes)}) from {removed.root}")
