"""CLI options shared by decompose, generate and evaluate: --keep, --method, --calibration-*."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from space.config import KEEP_CONVENTION, METHOD_NAMES

if TYPE_CHECKING:
    from dse.calibration import CalibrationSettings
    from dse.models import LoadedModel
    from space.config import DecompositionConfig

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
        click.option("--calibration-source", default=None, metavar="FILE",
                     help="Calibration text (default: <data dir>/wikitext2/valid.txt, the "
                          "validation split; never the test split)."),
        click.option("--calibration-sequences", type=int, default=16, show_default=True,
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


def gamma_for(layers: str, tensors: str, rank: int | None, keep: float | None,
              n_layers: int | None = None, method: str = "svd") -> DecompositionConfig:
    """γ from the CLI strings; ``--layers all`` needs ``n_layers`` (known after loading).

    A method other than ``svd`` is part of γ, so γ alone says which form is installed and
    counted (two factors for keep ratios and the calibrated methods).
    """
    from space.config import DecompositionConfig, parse_int_list, parse_tensor_list
    from space.errors import InvalidConfigError

    if keep is not None and rank is not None:
        raise InvalidConfigError("--keep and --rank are exclusive: give a kept-parameter ratio "
                                 "or an absolute rank")
    if keep is not None and not 0.0 < keep <= 1.0:
        raise InvalidConfigError(f"--keep must be in (0, 1] ({KEEP_CONVENTION}), got {keep}")
    if rank is not None and rank < 1:
        raise InvalidConfigError(f"--rank must be at least 1, got {rank}")
    if layers.strip().lower() == "all":
        chosen: tuple[int, ...] = tuple(range(n_layers)) if n_layers is not None else ()
    else:
        chosen = parse_int_list(layers)
    named = None if method == "svd" else method
    if keep is not None:
        return DecompositionConfig(layers=chosen, tensors=parse_tensor_list(tensors), rank=None,
                                   keep=keep, method=named)
    return DecompositionConfig(layers=chosen, tensors=parse_tensor_list(tensors), rank=rank or 1,
                               method=named)


def prepare_calibration(loaded: LoadedModel, gamma: DecompositionConfig, method: str,
                        settings: CalibrationSettings, *, cache_dir: str | None,
                        progress: bool) -> None:
    """Load or collect the calibration when γ uses a calibrated method (stored on ``loaded``)."""
    from dse.calibration_store import load_or_collect
    from dse.methods import CALIBRATED_METHODS

    used = {gamma.method_for(t, method) for t in gamma.tensor_names(loaded.spec)}
    if gamma.is_identity or not used & CALIBRATED_METHODS:
        return
    calibration, collected = load_or_collect(loaded, settings, cache_dir=cache_dir,
                                             progress=progress)
    loaded.calibration = calibration
    if progress and not collected:
        print(f"calibration: {calibration.tokens} tokens, read from the cache", file=sys.stderr)
