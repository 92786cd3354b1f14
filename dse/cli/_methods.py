"""CLI options shared by decompose, generate and evaluate: --keep, --method, --calibration-*."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from dse.gamma_args import gamma_for, prepare_calibration
from space.config import KEEP_CONVENTION, METHOD_NAMES

if TYPE_CHECKING:
    from dse.calibration import CalibrationSettings

__all__ = ["method_options", "keep_options", "calibration_from_options", "gamma_for",
           "prepare_calibration", "KEEP_CONVENTION"]

F = TypeVar("F", bound=Callable[..., Any])

METHOD_HELP = ("svd (exact truncated SVD), hooi (the paper's Algorithm 1), asvd (activation-aware "
               "scaling), svd-llm (truncation-aware whitening), feature (output feature space) — "
               "the last three calibrate on WikiText-2 validation — or activation (run-time "
               "low-rank input; no weight changes).")


def method_options(func: F) -> F:
    """--method and the --calibration-* options."""
    options = [
        click.option("--method", type=click.Choice(METHOD_NAMES), default="svd", show_default=True,
                     help=METHOD_HELP),
        click.option("--calibration-source", default=None, metavar="FILE|task:NAME",
                     help="Calibration text (default: <data dir>/wikitext2/valid.txt, the "
                          "validation split; never the test split), or task:dse_arc_easy / "
                          "task:dse_mmlu (the task's held-out split)."),
        click.option("--calibration-sequences", type=int, default=128, show_default=True,
                     help="Calibration windows."),
        click.option("--calibration-length", type=int, default=512, show_default=True,
                     help="Tokens per calibration window."),
        click.option("--calibration-seed", type=int, default=0, show_default=True,
                     help="Seed choosing the windows."),
        click.option("--asvd-alpha", type=float, default=0.5, show_default=True,
                     help="ASVD exponent alpha of the scaling diag(mean|x|)^alpha."),
        click.option("--svd-fallback", is_flag=True,
                     help="svd-llm: use plain svd for a tensor whose Cholesky fails even with "
                          "jitter (default: one error)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def keep_options(func: F) -> F:
    """--keep (exclusive with --rank)."""
    return click.option(
        "--keep", type=float, default=None, metavar="FRACTION",
        help=f"Keep this fraction of each tensor's parameters ({KEEP_CONVENTION}); "
             f"exclusive with --rank; two factors U_kΣ_k, V_kᵀ are installed.",
    )(func)


def calibration_from_options(options: dict[str, Any]) -> CalibrationSettings:
    """CalibrationSettings from the parsed --calibration-* options (pops them)."""
    from dse.calibration import CalibrationSettings

    return CalibrationSettings(
        source=options.pop("calibration_source"), sequences=options.pop("calibration_sequences"),
        length=options.pop("calibration_length"), seed=options.pop("calibration_seed"),
        asvd_alpha=options.pop("asvd_alpha"), svd_fallback=options.pop("svd_fallback"),
    )
