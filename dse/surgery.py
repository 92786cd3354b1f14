"""Model surgery: apply a γ to a loaded model in place, and undo it exactly.

A study evaluates hundreds of γ on one loaded model, so reloading between trials is
not an option. :func:`apply` swaps each decomposed weight's module (``nn.Linear``, ``Conv1D``, experts) for a
:class:`~dse.layers.FactorizedLinear` and keeps the original module objects aside;
:func:`undo` puts those very objects back, so the restored model is the original one
bit for bit (its weights were never touched). The modules are found through the
model's family adapter (``space.families``), so every supported family works without
hard-coded paths, also under task heads that prefix the block list (:mod:`dse.model_paths`);
where the factors come from (cache, decomposition, calibration) is :mod:`dse.factor_sources`'
job, how a weight is read out of its module and what replaces it (Linear, GPT-2 Conv1D,
3-D expert parameters) :mod:`dse.adapters`', and the report :mod:`dse.surgery_report`'s.
Two expert tensors of one layer (``gate_up``, ``down``) live in one module: it is
replaced once and its original kept once.

The originals are kept on the :class:`~dse.models.LoadedModel` (``originals``: module
path -> original module; ``applied``: the :class:`SurgeryReport` of the installed γ).

One module because applying and undoing share the record of what was swapped, which is
what makes the undo exact.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, cast

from dse.factor_sources import Obtain, factor_source
from dse.generation import greedy_continuation
from dse.model_paths import block_prefix, count_parameters, decomposable_paths, installed_factors, set_module
from dse.surgery_report import SurgeryReport, TensorResult, current, gamma_from_canonical
from space.config import TWO_FACTOR_METHODS, DecompositionConfig, ResolvedPair
from space.errors import CalibrationError, InvalidConfigError

if TYPE_CHECKING:
    import torch

    from dse.cache import FactorCache
    from dse.calibration import Calibration
    from dse.decompose import TuckerFactors
    from dse.models import LoadedModel

__all__ = [
    "TensorResult",
    "SurgeryReport",
    "apply",
    "install_factors",
    "undo",
    "set_module",
    "decomposed",
    "current",
    "installed_factors",
    "gamma_from_canonical",
    "greedy_continuation",
    "decomposable_paths",
    "count_parameters",
]


def _check_method(method: str) -> None:
    from dse.methods import check_method

    check_method(method)


def _install(
    loaded: LoadedModel,
    gamma: DecompositionConfig,
    pairs: list[ResolvedPair],
    obtain: Obtain,
    *,
    method: str,
    fold: bool,
    progress: bool,
    methods: Mapping[tuple[int, str], str] | None = None,
) -> SurgeryReport:
    """Swap in the factorized layers; on any failure (Ctrl-C included) restore the model."""
    import torch

    from dse import adapters
    from dse.methods.activation import ActivationLowRankLinear
    from space.progress import progress_bar as tqdm

    spec = loaded.spec
    model = loaded.model
    prefix = block_prefix(loaded)
    undo(loaded)
    params_before = count_parameters(model)
    originals: dict[str, torch.nn.Module] = {}
    results: list[TensorResult] = []
    seconds = 0.0
    label = gamma.describe(spec)
    try:
        with torch.no_grad():
            bar = tqdm(pairs, desc=f"decomposing {label}", unit="tensor", disable=not progress,
                       leave=False)
            for pair in bar:
                tensor = spec.tensor(pair.tensor)
                path = f"{prefix}.{pair.layer}.{tensor.module}"
                current = model.get_submodule(path)
                original = originals.get(path, current)  # experts: a sibling may be factored
                weight = adapters.dense_weight(original, tensor, path)
                bar.set_postfix_str(f"L{pair.layer} {pair.tensor} r={pair.rank}")
                start = time.perf_counter()
                factors, hit, rel_error, jitter = obtain(pair, original, weight)
                seconds += time.perf_counter() - start  # decomposing or reading the cache only
                replacement: torch.nn.Module
                if factors is None:  # method activation (Linear only, checked by apply)
                    replacement = ActivationLowRankLinear(cast("torch.nn.Linear", original), pair.rank)
                    rel_error = 0.0  # the weight is kept whole
                else:
                    if rel_error is None:
                        rel_error = adapters.relative_error(weight, factors)
                    replacement = adapters.factorized(current, original, tensor, factors, fold=fold)
                originals.setdefault(path, original)
                set_module(model, path, replacement)
                tensor_method = (methods or {}).get((pair.layer, pair.tensor), method)
                results.append(TensorResult(layer=pair.layer, tensor=pair.tensor, rank=pair.rank,
                                            rel_error=float(rel_error), cached=hit,
                                            method=tensor_method, jitter=jitter))
    except BaseException:
        _restore(model, originals)
        raise
    params_after = count_parameters(model)
    hits = sum(r.cached for r in results)
    report = SurgeryReport(
        model=loaded.name,
        fingerprint=loaded.fingerprint,
        gamma=gamma.canonical(spec),
        gamma_hash=gamma.hash(spec),
        description=label,
        method=method,
        fold=fold,
        params_before=params_before,
        params_after=params_after,
        param_reduction_pct=100.0 * (params_before - params_after) / params_before,
        per_tensor=results,
        max_rel_error=max((r.rel_error for r in results), default=0.0),
        decompose_seconds=seconds,
        cache_hits=hits,
        cache_misses=len(results) - hits,
    )
    if originals:
        from dse.export.hf import refuse_plain_save

        loaded.originals = originals
        loaded.applied = report
        refuse_plain_save(loaded.model)  # a plain save would reload with random weights
    return report

def apply(
    loaded: LoadedModel,
    gamma: DecompositionConfig,
    *,
    cache: FactorCache | None = None,
    method: str | None = None,
    fold: bool | None = None,
    progress: bool = False,
    calibration: Calibration | None = None,
) -> SurgeryReport:
    """Decompose the tensors γ names and swap factorized layers into the model, in place.

    A γ already applied to this model is undone first, so at most one γ is installed.
    γ is validated against the model's spec before anything changes.

    Args:
        loaded: the model to change (its ``nn.Module`` is modified in place).
        gamma: the decomposition configuration.
        cache: where factors come from; without one every tensor is decomposed afresh.
        method: the method of tensors γ names none for (default ``svd``): ``svd``,
            ``hooi`` (Algorithm 1), ``asvd``, ``svd-llm``, ``feature`` (calibrated) or
            ``activation`` (run-time decomposition of the input; no weight changes).
        fold: two factors (H·r + r·W parameters) instead of the paper's three
            (H·r + r² + r·W). Keep ratios and the calibrated methods always use two.
        progress: show a progress bar naming γ and the current tensor.
        calibration: the statistics the calibrated methods need (default
            ``loaded.calibration``; see :func:`dse.calibration_store.load_or_collect`).

    Returns:
        The report: parameters before/after counted on the model, the relative error of
        every tensor, decomposition time and cache hits.

    Raises:
        InvalidConfigError: γ or ``method`` is not valid for this model.
        CalibrationError: a calibrated method without calibration statistics.
    """
    default = method or "svd"
    _check_method(default)
    pairs = gamma.validate_for(loaded.spec)
    methods = {(p.layer, p.tensor): gamma.method_for(p.tensor, default, p.layer) for p in pairs}
    for (_, name), tensor_method in methods.items():
        tensor = loaded.spec.tensor(name)
        if tensor.kind != "linear" and (tensor_method == "activation" or tensor_method in TWO_FACTOR_METHODS):
            raise InvalidConfigError(
                f"method {tensor_method} works on nn.Linear weights only; tensor {name!r} of "
                f"{loaded.name} is {tensor.handling}; use svd or hooi for it"
            )
    calibration = calibration if calibration is not None else loaded.calibration
    needing = sorted({m for m in methods.values() if m in TWO_FACTOR_METHODS})
    if needing and calibration is None:
        raise CalibrationError(
            f"method {needing[0]} needs calibration statistics of the layer inputs; pass "
            f"--calibration-* options or a [calibration] section (or use svd/hooi)"
        )
    if calibration is not None and needing and calibration.fingerprint != loaded.fingerprint:
        raise CalibrationError("the calibration statistics belong to another model (fingerprint "
                               f"{calibration.fingerprint[:12]}, this is {loaded.fingerprint[:12]})")
    # γ alone decides the form, so space.metrics counts what is installed whatever the caller's
    # default method (a calibrated default on a rank γ gets an identity core, counted as such).
    two = bool(fold) or gamma.is_two_factor()
    obtain = factor_source(loaded, cache, calibration, methods)
    label = next(iter(set(methods.values()))) if len(set(methods.values())) == 1 else "mixed"
    return _install(loaded, gamma, pairs, obtain, method=label if methods else default, fold=two,
                    progress=progress, methods=methods)

def install_factors(
    loaded: LoadedModel,
    gamma: DecompositionConfig,
    factors: Mapping[tuple[int, str], TuckerFactors],
    *,
    method: str = "svd",
    fold: bool = False,
    rel_errors: Mapping[tuple[int, str], float] | None = None,
) -> SurgeryReport:
    """Install factors computed elsewhere (e.g. loaded from disk), without decomposing.

    Args:
        loaded: the model to change in place.
        gamma: the γ the factors belong to.
        factors: one entry per ``(layer, tensor)`` pair γ decomposes, of γ's rank.
        method: recorded in the report only.
        fold: as in :func:`apply`.
        rel_errors: known errors per pair; missing ones are computed from the weights.

    Raises:
        InvalidConfigError: γ is invalid for the model, or ``factors`` do not match it.
    """
    pairs = gamma.validate_for(loaded.spec)
    wanted = {(p.layer, p.tensor) for p in pairs}
    if set(factors) != wanted:
        missing = sorted(wanted - set(factors))
        extra = sorted(set(factors) - wanted)
        raise InvalidConfigError(
            f"factors do not match γ {gamma.describe(loaded.spec)}: missing {missing[:4]}, "
            f"extra {extra[:4]}"
        )
    for pair in pairs:
        f = factors[(pair.layer, pair.tensor)]
        tensor = loaded.spec.tensor(pair.tensor)
        lead = (tensor.experts,) if tensor.kind == "experts" else ()
        expected = [(*lead, tensor.shape[0], pair.rank), (*lead, pair.rank, pair.rank),
                    (*lead, tensor.shape[1], pair.rank)]
        got = [tuple(f.u1.shape), tuple(f.core.shape), tuple(f.u2.shape)]
        if got != expected:
            raise InvalidConfigError(
                f"factors of layer {pair.layer} tensor {pair.tensor!r} have shapes "
                f"{', '.join(map(str, got))}; expected {', '.join(map(str, expected))}"
            )

    def obtain(
        pair: ResolvedPair, layer: torch.nn.Module, weight: torch.Tensor
    ) -> tuple[TuckerFactors, bool, float | None, float]:
        key = (pair.layer, pair.tensor)
        known = rel_errors.get(key) if rel_errors is not None else None
        return factors[key], True, None if known is None else float(known), 0.0

    return _install(loaded, gamma, pairs, obtain, method=method,
                    fold=fold or gamma.is_two_factor(), progress=False)


def _restore(model: torch.nn.Module, originals: Mapping[str, torch.nn.Module]) -> None:
    for path in reversed(list(originals)):
        set_module(model, path, originals[path])


def undo(loaded: LoadedModel) -> bool:
    """Put the original modules back; the model is then bit-identical to the original.

    Returns:
        Whether a γ was installed (undoing an undecomposed model does nothing).
    """
    if not loaded.originals:
        loaded.applied = None
        return False
    from dse.export.hf import allow_plain_save

    _restore(loaded.model, loaded.originals)
    allow_plain_save(loaded.model)
    loaded.originals = {}
    loaded.applied = None
    return True


@contextlib.contextmanager
def decomposed(
    loaded: LoadedModel,
    gamma: DecompositionConfig,
    *,
    cache: FactorCache | None = None,
    method: str | None = None,
    fold: bool | None = None,
    progress: bool = False,
    calibration: Calibration | None = None,
) -> Iterator[SurgeryReport]:
    """Apply γ for the duration of a ``with`` block; the model leaves it original.

    The undo runs on every exit (exceptions and Ctrl-C included), so an interrupted
    trial never leaves a decomposed model behind. A γ installed before the block is
    undone on entry and not re-installed.
    """
    report = apply(loaded, gamma, cache=cache, method=method, fold=fold, progress=progress,
                   calibration=calibration)
    try:
        yield report
    finally:
        undo(loaded)
