"""Helpers shared by the CLI commands: JSON output, tables, and the γ options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from space.quiet import library_warnings_once

__all__ = ["SCHEMA_VERSION", "json_payload", "emit_json", "library_warnings_once", "print_table",
            "gamma_options", "gamma_from_options", "console", "json_option"]

F = TypeVar("F", bound=Callable[..., Any])


# Bump when a command's JSON changes incompatibly (a key removed or renamed, a type changed);
# added keys keep the version. The shapes are documented in docs/cli-json.md.
SCHEMA_VERSION = 1
# Without a terminal, tables are laid out this wide, so nothing is cut or wrapped.
PIPE_WIDTH = 100_000


def json_payload(obj: Any, key: str | None = None) -> dict[str, Any]:
    """One JSON object carrying ``schema_version`` first.

    A dict gains the version; anything else (a list, None) is put under ``key``.
    """
    if isinstance(obj, dict) and key is None:
        return {"schema_version": SCHEMA_VERSION, **{k: v for k, v in obj.items() if k != "schema_version"}}
    if key is None:
        raise TypeError("a JSON list or null needs a key to be put under")
    return {"schema_version": SCHEMA_VERSION, key: obj}


def emit_json(obj: Any, key: str | None = None) -> None:
    """Print one JSON object on stdout, with ``schema_version``: the contract for scripts.

    Args:
        obj: a dict, or a list/None put under ``key``.
        key: the name of a list's or null's field in the object.
    """
    sys.stdout.write(json.dumps(json_payload(obj, key), indent=2, default=str) + "\n")
    sys.stdout.flush()


def json_option(func: F) -> F:
    """``--json``: print exactly one JSON object on stdout instead of tables."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object on stdout (with schema_version)."
    )(func)


def console() -> Any:
    """Rich console on stdout; piped or redirected, tables keep their full width."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=PIPE_WIDTH, no_color=True, highlight=False)


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console().print(table)


def _not_blank(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """An option given on the command line with nothing in it (``--layers ""``) is a mistake, not "none"."""
    from click.core import ParameterSource

    given = ctx.get_parameter_source(param.name or "") == ParameterSource.COMMANDLINE
    if given and isinstance(value, str) and not value.strip():
        raise click.BadParameter("is empty: give layer indices like 2,17,29 or 2-5, or all",
                                 ctx=ctx, param=param)
    return value


def gamma_options(func: F) -> F:
    """The options that describe γ: --layers, --tensors, --rank."""
    func = click.option(
        "--rank", type=int, default=None,
        help="Pruned rank PR for every decomposed tensor (1 ≤ PR ≤ min(H, W))  [default: 1].",
    )(func)
    func = click.option(
        "--tensors", default="all", show_default=True,
        help="Decomposed tensors of each layer: comma-separated short names, or 'all'.",
    )(func)
    func = click.option(
        "--layers", default="", show_default=False, callback=_not_blank,
        help="Decomposed layers, 0-based (the paper's tables are 1-based): e.g. 2,17,29, 2-5 or all.",
    )(func)
    return func


def gamma_from_options(layers: str, tensors: str, rank: int | None) -> Any:
    """Build γ from the CLI strings; malformed lists raise one-line errors."""
    from space.config import DecompositionConfig, parse_int_list, parse_tensor_list
    from space.errors import InvalidConfigError

    rank = 1 if rank is None else rank
    if rank < 1:
        raise InvalidConfigError(f"--rank must be at least 1, got {rank}")
    return DecompositionConfig(
        layers=parse_int_list(layers), tensors=parse_tensor_list(tensors), rank=rank
    )
