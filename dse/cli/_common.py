"""Helpers shared by the CLI commands: JSON output, tables, and the γ options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

__all__ = ["emit_json", "print_table", "gamma_options", "gamma_from_options", "console", "json_option"]

F = TypeVar("F", bound=Callable[..., Any])


def emit_json(obj: Any) -> None:
    """Print one JSON object (or list) on stdout: the contract for scripts."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def json_option(func: F) -> F:
    """``--json``: print exactly one JSON object (or list) on stdout instead of tables."""
    return click.option(
        "--json", "as_json", is_flag=True, help="Print one JSON object (or list) on stdout."
    )(func)


def console() -> Any:
    from rich.console import Console

    return Console()


def print_table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A rich table on stdout."""
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(str(column))
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console().print(table)


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
        "--layers", default="", show_default=False,
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
