"""Where ``dse.surgery.apply`` gets each tensor's factors: the factor cache, a fresh decomposition, or calibration.

:func:`factor_source` returns the ``obtain`` step of the surgery: for one (layer,
tensor) pair and its dense weight, the factors (None: the ``activation`` method keeps
the weight whole), whether they came from the cache, and the svd-llm jitter. Experts
are decomposed one expert matrix at a time, each cached under its own key; the
calibrated methods are cached under their calibration's key and options.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from space.config import TWO_FACTOR_METHODS, ResolvedPair

if TYPE_CHECKING:
    import torch

    from dse.cache import FactorCache
    from dse.calibration import Calibration
    from dse.decompose import TuckerFactors
    from dse.methods import TwoFactors
    from dse.models import LoadedModel

__all__ = ["Obtain", "factor_source"]

# (pair, original module, its dense weight: H×W, or E×H×W for experts) -> factors (None: the
# weight stays whole, method activation), came from cache, known rel_error or None, jitter.
Obtain = Callable[[ResolvedPair, "torch.nn.Module", "torch.Tensor"],
              "tuple[TuckerFactors | None, bool, float | None, float]"]


def factor_source(loaded: LoadedModel, cache: FactorCache | None, calibration: Calibration | None,
                  methods: Mapping[tuple[int, str], str]) -> Obtain:
    """The factors of each pair of ``loaded`` under its method in ``methods`` ((layer, tensor) -> method)."""
    fingerprint = loaded.fingerprint

    def obtain(
        pair: ResolvedPair, layer: torch.nn.Module, weight: torch.Tensor
    ) -> tuple[TuckerFactors | None, bool, None, float]:
        import torch

        from dse.decompose import TuckerFactors, decompose

        name = methods[(pair.layer, pair.tensor)]
        if name == "activation":
            return None, False, None, 0.0
        if name in TWO_FACTOR_METHODS:
            return _calibrated(loaded, cache, calibration, pair, cast("torch.nn.Linear", layer), name)

        def one(key: str, matrix: torch.Tensor) -> tuple[TuckerFactors, bool]:
            if cache is not None:
                return cache.factors(fingerprint, pair.layer, key, matrix, pair.rank, method=name,
                                     label=loaded.name)
            return decompose(matrix, pair.rank, method=name), False

        if weight.ndim == 2:
            return (*one(pair.tensor, weight), None, 0.0)
        # Experts: each expert's matrix on its own, cached under its own key.
        parts = [one(f"{pair.tensor}.expert{e}", weight[e]) for e in range(weight.shape[0])]
        stacked = TuckerFactors(*(torch.stack(group) for group in zip(*(f for f, _ in parts), strict=True)))
        return stacked, all(hit for _, hit in parts), None, 0.0
    return obtain


def _calibrated(
    loaded: LoadedModel, cache: FactorCache | None, calibration: Calibration | None,
    pair: ResolvedPair, layer: torch.nn.Linear, method: str,
) -> tuple[TuckerFactors, bool, None, float]:
    """Factors of a calibrated method, through the cache keyed by the calibration."""
    from dse.calibration import CalibrationSettings
    from dse.methods import two_factors

    assert calibration is not None
    settings = calibration.settings or CalibrationSettings()
    stats = calibration.stats(pair.layer, pair.tensor)
    weight = layer.weight.detach()

    def compute(rank: int) -> TwoFactors:
        return two_factors(weight, rank, method, stats, alpha=settings.asvd_alpha, bias=layer.bias,
                           allow_svd_fallback=settings.svd_fallback)

    if cache is None:
        two = compute(pair.rank)
        return two.factors(pair.rank), False, None, two.jitter
    variant = calibration.key
    if method == "asvd":
        variant += f"-a{settings.asvd_alpha:g}"
    if method == "svd-llm" and settings.svd_fallback:
        variant += "-fb"
    factors, hit = cache.factors(loaded.fingerprint, pair.layer, pair.tensor, weight, pair.rank,
                                 method=method, label=loaded.name, variant=variant,
                                 compute=compute)
    jitter = cache.last.jitter if cache.last is not None else 0.0
    return factors, hit, None, jitter
