"""Encodings that reach heterogeneous ranks with few parameters: kept-parameter ratios.

Every allowed layer is compressed; what is searched is how much of each tensor to keep
(rank = ⌊keep·H·W/(H+W)⌋, two factors U_kΣ_k and V_kᵀ) and, where the study lists
several in ``search.methods``, the method:

``ratios``
    One keep ratio per tensor type (``keep_q`` … ``keep_down``) in
    [``search.keep_min``, 1]; a ratio of at least :data:`UNTOUCHED` leaves that tensor
    type undecomposed (two factors at keep 1 would save nothing and still approximate).
``profile``
    A mean ratio ``keep`` and a ``slope`` across depth: layer l keeps
    keep + slope·(x_l − ½), x_l its position in [0, 1] among the allowed layers
    (clipped to [keep_min, 1]); layers at or above :data:`UNTOUCHED` are left alone.
``spectrum``
    ``keep`` and a ``strength``: ranks driven by each tensor's own truncation-loss
    spectrum (:class:`SpectrumEncoding`), interpolated with the uniform ratio.

γ from these encodings carries explicit per-pair ranks, so the paper's whole-layer
rank-1 γ (``gaps``/``spacing``) stays a separate option in its own study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dse.study.encoding import ENCODINGS, Encoding, Param, RejectedGamma
from dse.study.search_space import SearchSpace
from space.config import DecompositionConfig, rank_for_keep

__all__ = ["RatiosEncoding", "ProfileEncoding", "SpectrumEncoding", "UNTOUCHED", "MethodChoice", "profile_keep"]

#: Keep ratios at or above this leave the tensor undecomposed.
UNTOUCHED = 0.995


def profile_keep(layers: Sequence[int], keep_min: float, keep: float, slope: float, layer: int) -> float:
    """Layer keep = keep + slope·(x − ½), x its position in [0, 1] across ``layers``, clipped to [keep_min, 1]."""
    span = layers[-1] - layers[0]
    position = (layer - layers[0]) / span if span else 0.5
    return min(1.0, max(keep_min, keep + slope * (position - 0.5)))


class MethodChoice:
    """The method parameter of an encoding over ``search.methods`` (none when there is one method)."""

    space: SearchSpace

    @property
    def methods(self) -> tuple[str, ...]:
        return self.space.methods or ("svd",)

    def _method_param(self) -> list[Param]:
        return [Param("method", "categorical", choices=self.methods)] if len(self.methods) > 1 else []

    def _method(self, params: Mapping[str, Any]) -> str:
        return str(params["method"]) if len(self.methods) > 1 else self.methods[0]


class _KeepEncoding(MethodChoice, Encoding):
    by_construction = True
    keeps_ratios = True

    def _keep_param(self, name: str) -> Param:
        return Param(name, "float", self.space.keep_min, 1.0)

    def _encode_uniform(self, gamma: DecompositionConfig, *, flat: dict[str, float]) -> dict[str, Any] | None:
        """Parameters for a γ with one keep everywhere: ``flat`` sets the shape parameter to its neutral value."""
        if gamma.keep is None or gamma.keep >= UNTOUCHED or tuple(gamma.layers) != tuple(self.space.layers):
            return None
        if gamma.tensors != "all" and tuple(gamma.tensors) != self.space.spec.tensor_names:
            return None
        method = gamma.method or "svd"
        if method not in self.methods:
            return None
        params: dict[str, Any] = {"keep": gamma.keep, **flat}
        if len(self.methods) > 1:
            params["method"] = method
        return params

    def _gamma(self, keeps: Mapping[tuple[int, str], float], method: str) -> DecompositionConfig:
        """γ decomposing every pair whose keep is below UNTOUCHED, at its own rank."""
        spec = self.space.spec
        chosen = {pair: keep for pair, keep in keeps.items() if keep < UNTOUCHED}
        if not chosen:
            return DecompositionConfig()
        layers = sorted({layer for layer, _ in chosen})
        tensors = [t for t in spec.tensor_names if any(name == t for _, name in chosen)]
        if len(chosen) != len(layers) * len(tensors):
            raise RejectedGamma("the kept tensors do not form whole layers × tensor types (Def. 2)")
        ranks = {}
        for (layer, name), keep in chosen.items():
            shape = spec.tensor(name)
            ranks[f"{layer}:{name}"] = rank_for_keep(shape.out_features, shape.in_features, keep)
        return DecompositionConfig(layers=tuple(layers), tensors=tuple(tensors), rank=None, ranks=ranks,
                                   method=method, two_factor=True)


class RatiosEncoding(_KeepEncoding):
    """One keep ratio per tensor type (``keep_q`` … ``keep_down``) and the method."""

    name = "ratios"

    def params(self) -> list[Param]:
        return [self._keep_param(f"keep_{t}") for t in self.space.spec.tensor_names] + self._method_param()

    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        spec = self.space.spec
        keeps = {(layer, t): float(params[f"keep_{t}"]) for layer in self.space.layers for t in spec.tensor_names}
        return self._gamma(keeps, self._method(params))

    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        if gamma.keep is None or tuple(gamma.layers) != tuple(self.space.layers):
            return None
        spec = self.space.spec
        method = gamma.method or "svd"
        if method not in self.methods:
            return None
        names = gamma.tensor_names(spec)
        params: dict[str, Any] = {f"keep_{t}": (gamma.keep if t in names else 1.0) for t in spec.tensor_names}
        if len(self.methods) > 1:
            params["method"] = method
        return params


class ProfileEncoding(_KeepEncoding):
    """A mean keep ratio and a slope across depth, and the method."""

    name = "profile"

    def params(self) -> list[Param]:
        return [self._keep_param("keep"), Param("slope", "float", -1.0, 1.0), *self._method_param()]

    def layer_keep(self, keep: float, slope: float, layer: int) -> float:
        return profile_keep(self.space.layers, self.space.keep_min, keep, slope, layer)

    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        keep, slope = float(params["keep"]), float(params["slope"])
        keeps = {(layer, t): self.layer_keep(keep, slope, layer)
                 for layer in self.space.layers for t in self.space.spec.tensor_names}
        return self._gamma(keeps, self._method(params))

    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        return self._encode_uniform(gamma, flat={"slope": 0.0})


for _cls in (RatiosEncoding, ProfileEncoding):
    ENCODINGS.register(_cls.name, _cls)


class SpectrumEncoding(_KeepEncoding):
    """``keep`` (of the decomposable parameters), ``strength`` in [0, 1] and the method.

    Strength 0 gives every tensor the same keep ratio; strength 1 the allocation that
    loses the least relative truncation energy for the same parameters
    (:func:`dse.study.spectra.allocate_ranks`, from each weight's own spectrum); in
    between, the ranks are interpolated. The search tunes both to meet a budget.
    """

    name = "spectrum"

    def params(self) -> list[Param]:
        return [self._keep_param("keep"), Param("strength", "float", 0.0, 1.0), *self._method_param()]

    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        from dse.study.spectra import allocate_ranks, energy_shares

        spec = self.space.spec
        keep, strength = float(params["keep"]), float(params["strength"])
        if keep >= UNTOUCHED:
            return DecompositionConfig()
        shapes = {(layer, t.name): (t.out_features, t.in_features)
                  for layer in self.space.layers for t in spec.tensors}
        optimal = allocate_ranks(shapes, energy_shares(spec, self.space.model), keep) if strength > 0 else {}
        ranks = {}
        for (layer, name), (height, width) in shapes.items():
            uniform = rank_for_keep(height, width, keep)
            best = optimal.get((layer, name), uniform)
            rank = round((1.0 - strength) * uniform + strength * best)
            ranks[f"{layer}:{name}"] = max(1, min(height, width, rank))
        return DecompositionConfig(layers=tuple(self.space.layers), tensors="all", rank=None, ranks=ranks,
                                   method=self._method(params), two_factor=True)

    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        return self._encode_uniform(gamma, flat={"strength": 0.0})


ENCODINGS.register(SpectrumEncoding.name, SpectrumEncoding)
