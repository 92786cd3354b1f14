"""The ``dse`` command line: thin commands that parse, call the public API, and print.

Subcommands live in their own modules and are imported only when invoked, so
``dse --help`` never loads torch, transformers or lm-eval. Every user error
(:class:`space.errors.DseError`, pydantic's ``ValidationError``) becomes one line on
stderr and exit code 2; ``--debug`` (or ``DSE_DEBUG=1``) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

__all__ = ["main", "cli"]

# name -> "module:attribute" of a click command or group, loaded on first use.
_COMMANDS: dict[str, tuple[str, str]] = {
    "space": ("dse.cli.space_cmd:space", "Inspect, count and check the decomposition design space."),
    "decompose": ("dse.cli.decompose_cmd:decompose", "Decompose a model by a γ and report errors and savings."),
    "generate": ("dse.cli.decompose_cmd:generate", "Greedy-decode a prompt with an original or decomposed model."),
    "cache": ("dse.cli.cache_cmd:cache", "Inspect or clear the factor cache."),
    "evaluate": ("dse.cli.evaluate_cmd:evaluate", "Measure accuracy, perplexity, latency and energy of a γ."),
    "study": ("dse.cli.study_cmd:study", "Run, resume and query design-space studies."),
    "characterize": ("dse.cli.characterize_cmd:characterize", "Measure the paper's sweeps (Figs. 5-11) on a model."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when one is run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        # Listing help must not import the command modules (they may be heavy).
        if ctx.resilient_parsing or _only_listing(ctx):
            return click.Command(cmd_name, help=_COMMANDS[cmd_name][1])
        module_name, attr = _COMMANDS[cmd_name][0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command


def _only_listing(ctx: click.Context) -> bool:
    return ctx.meta.get("dse.listing", False)


class _HelpAwareGroup(LazyGroup):
    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        ctx.meta["dse.listing"] = True
        try:
            super().format_commands(ctx, formatter)
        finally:
            ctx.meta["dse.listing"] = False


@click.group(cls=_HelpAwareGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
@click.version_option(package_name="lowrank-dse", prog_name="dse")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """lowrank-dse: the low-rank (Tucker) decomposition with the least latency × energy.

    It finds the decomposition of a language model with the least latency × energy for a
    given accuracy loss.

    Layer indices are 0-based everywhere (the paper's tables are 1-based).
    """
    ctx.obj = {"debug": debug}
    if debug:
        os.environ["DSE_DEBUG"] = "1"


def _one_line(exc: BaseException) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "value"
            message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
            lines.append(f"{where}: {message}")
        return "\n".join(f"error: {line}" for line in lines)
    return f"error: {exc}"


def main(argv: list[str] | None = None) -> Any:
    """Entry point of the ``dse`` script: user errors exit 2 with one line each."""
    from pydantic import ValidationError

    from dse.cli._common import library_warnings_once
    from space.errors import DseError

    library_warnings_once()
    try:
        return cli.main(args=argv, prog_name="dse", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        # One line, as for every user error; `dse CMD --help` shows the usage.
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code if exc.exit_code else 2)
    except (DseError, ValidationError) as exc:
        if os.environ.get("DSE_DEBUG") == "1":
            raise
        click.echo(_one_line(exc), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
