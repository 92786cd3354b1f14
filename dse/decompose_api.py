"""``dse.decompose_model`` and ``dse.generate``: the Python side of ``dse decompose`` and ``dse generate``.

>>> import dse
>>> report = dse.decompose_model("smollm2-135m", layers="all", keep=0.9, out="smol-0.9")  # doctest: +SKIP
>>> report["param_reduction_pct"], report["max_rel_error"], report["out"]  # doctest: +SKIP
>>> dse.generate("smol-0.9", prompt="The capital of France is", compare=True)  # doctest: +SKIP

Everything those commands do happens here (γ checked against the model's config before
its weights load, calibration, surgery, saving, saved directories); the CLI parses its
flags, calls these and prints the dict they return (docs/cli-json.md names its keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dse.gamma_args import KEEP_CONVENTION, gamma_for, gamma_for_model, prepare_calibration
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.cache import FactorCache
    from dse.calibration import CalibrationSettings
    from dse.models import LoadedModel
    from dse.surgery_report import SurgeryReport
    from space.config import DecompositionConfig

__all__ = ["decompose_model", "generate"]


def decompose_model(
    model: str,
    gamma: DecompositionConfig | None = None,
    *,
    layers: Sequence[int] | str = (),
    tensors: Sequence[str] | str = "all",
    rank: int | None = None,
    keep: float | None = None,
    method: str = "svd",
    calibration: CalibrationSettings | None = None,
    fold: bool = False,
    out: str | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    cache_dir: str | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Decompose ``model`` by γ and report it; with ``out``, also save it. The ``--json`` dict.

    γ is ``gamma``, or ``layers`` (0-based, or ``"all"``), ``tensors`` and ``rank`` or
    ``keep`` (a kept-parameter ratio), decomposed by ``method``. ``fold`` installs two
    factors (Γ folded into U1) instead of the paper's three. Factors are read from and
    written to the factor cache under ``cache_dir`` unless ``use_cache`` is false. The
    result is the surgery report (parameters before and after, error per tensor, time,
    cache hits) plus ``out`` (the saved directory or None) and ``rank_convention``.

    Raises:
        DseError: bad input (one line, what is allowed), unknown model, unwritable ``out``.
    """
    from dse import saving
    from dse.models import load_model

    given = gamma if gamma is not None else gamma_for(layers, tensors, rank, keep, n_layers=1, method=method)
    if out is not None:
        if given.is_identity:  # "all" counts as one layer here, so only an empty γ is refused
            raise InvalidConfigError("--out saves a decomposed model, but no --layers were given")
        saving.check_writable(out)  # fail before the slow part
    gamma = gamma_for_model(model, layers, tensors, rank, keep, method, gamma)
    loaded = load_model(model, device=device, dtype=dtype)
    report = _apply(loaded, gamma, method, calibration, cache_dir, use_cache, progress, fold=fold or None)
    saved = str(saving.save_decomposed(loaded, report, out)) if out is not None else None
    convention = KEEP_CONVENTION if keep is not None or gamma.keep is not None else "absolute rank per tensor"
    return report.model_dump(mode="json") | {"out": saved, "rank_convention": convention}


def generate(
    model: str,
    gamma: DecompositionConfig | None = None,
    *,
    prompt: str,
    max_new_tokens: int = 16,
    compare: bool = False,
    layers: Sequence[int] | str = (),
    tensors: Sequence[str] | str = "all",
    rank: int | None = None,
    keep: float | None = None,
    method: str = "svd",
    calibration: CalibrationSettings | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    cache_dir: str | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Greedy-decode ``prompt`` with ``model`` decomposed by γ, or with a directory from ``decompose --out``.

    The dict has ``model``, ``gamma`` (None for the original), ``description``, ``prompt``
    and ``continuation``; with γ also ``param_reduction_pct`` and ``method`` (and
    ``rank_convention`` for ``keep``); with ``compare``, ``original_continuation`` from the
    undecomposed model. A saved directory carries its own γ, method and dtype.

    Raises:
        DseError: bad input (one line, what is allowed), unknown model, a saved directory
            given a γ or another dtype.
    """
    from dse import saving, surgery

    if max_new_tokens < 1:
        raise InvalidConfigError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    given = gamma if gamma is not None else gamma_for(layers, tensors, rank, keep, n_layers=1, method=method)
    original: str | None = None
    report: SurgeryReport | None
    if saving.is_decomposed_dir(model):
        loaded = _load_saved(model, given, dtype, device)
        report = surgery.current(loaded)
        text = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
        if compare:
            surgery.undo(loaded)
            original = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
    else:
        from dse.models import load_model

        gamma = gamma_for_model(model, layers, tensors, rank, keep, method, gamma)
        loaded = load_model(model, device=device, dtype=dtype or "float32")
        if compare and not gamma.is_identity:
            original = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
        report = None
        if not gamma.is_identity:
            report = _apply(loaded, gamma, method, calibration, cache_dir, use_cache, progress, fold=None)
        text = surgery.greedy_continuation(loaded, prompt, max_new_tokens=max_new_tokens)
    result: dict[str, Any] = {
        "model": loaded.name,
        "gamma": report.gamma if report is not None else None,
        "description": report.description if report is not None else "original",
        "prompt": prompt,
        "continuation": text,
    }
    if report is not None:
        result["param_reduction_pct"] = report.param_reduction_pct
        result["method"] = report.method
        if keep is not None:
            result["rank_convention"] = KEEP_CONVENTION
    if original is not None:
        result["original_continuation"] = original
    return result


def _load_saved(directory: str, gamma: DecompositionConfig, dtype: str | None, device: str) -> LoadedModel:
    """A directory from ``dse decompose --out``, refusing a γ or dtype that would contradict it."""
    from dse import saving

    if not gamma.is_identity:
        raise InvalidConfigError(f"{directory!r} is a saved decomposed model and carries its own γ; "
                                 f"drop --layers/--tensors/--rank")
    manifest = saving.read_manifest(directory)
    if dtype is not None and dtype != manifest.base.dtype:
        raise InvalidConfigError(f"{directory!r} was saved in {manifest.base.dtype} and runs only in it; "
                                 f"drop --dtype or give --dtype {manifest.base.dtype}")
    return saving.load_decomposed(directory, device=device)


def _apply(loaded: LoadedModel, gamma: DecompositionConfig, method: str, calibration: CalibrationSettings | None,
           cache_dir: str | None, use_cache: bool, progress: bool, *, fold: bool | None) -> SurgeryReport:
    """Calibrate if γ's method needs it, then install γ's factors (from the cache where it has them)."""
    from dse import surgery
    from dse.calibration import CalibrationSettings

    prepare_calibration(loaded, gamma, method, calibration or CalibrationSettings(), cache_dir=cache_dir,
                        progress=progress)
    return surgery.apply(loaded, gamma, cache=_cache(cache_dir, use_cache), method=method, fold=fold,
                         progress=progress)


def _cache(cache_dir: str | None, use_cache: bool) -> FactorCache | None:
    if not use_cache:
        return None
    from dse.cache import FactorCache

    return FactorCache.for_cache_dir(cache_dir)
