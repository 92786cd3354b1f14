"""The paper's space and the data-aware one in a single γ: delete a few layers, compress the rest mildly.

``combined``
    ``n_layers`` (0 … ``search.max_layers``) and ``gap_0 … gap_M`` place whole layers at
    the smallest searched rank (the paper's rank 1, in effect deleting them) exactly as
    ``gaps`` does, under the same rules (skip-early, min-distance, …); ``keep`` and
    ``slope`` set a kept-parameter ratio per remaining allowed layer exactly as
    ``profile`` does (layers at or above :data:`UNTOUCHED` stay whole). Both use the
    study's method (e.g. ``svd-llm``), unless ``search.rank_one_method`` names another for
    the rank-1 layers (per (layer, tensor) pair in γ's ``methods``): on SmolLM2 whitened
    rank-1 factors lost less accuracy than plain SVD's on Table IV's L[2,27] (docs/study.md).
    Factors are two matrices when keep-ratio layers are present.

Why one γ: a γ is layers × tensor types with a rank per pair (Def. 2–3), so rank-1
layers and keep-ratio layers of all seven tensors fit one configuration; the rules of
the paper's space apply to the rank-1 layers (:func:`dse.study.search_space.check_gamma`).
The Table IV seeds are expressible (``keep`` = 1: nothing else compressed).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dse.study.encoding import ENCODINGS, GapsEncoding, Param
from dse.study.encoding_ratios import UNTOUCHED, MethodChoice, profile_keep
from dse.study.search_space import SearchSpace
from space.config import DecompositionConfig, rank_for_keep
from space.errors import InvalidConfigError

__all__ = ["CombinedEncoding"]


class CombinedEncoding(MethodChoice, GapsEncoding):
    """Rank-1 layers placed by gaps, and a keep-ratio profile over the other allowed layers."""

    name = "combined"
    by_construction = True
    keeps_ratios = True
    mixes_deletions = True

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        if len(space.ranks) != 1 or len(space.tensor_sets) != 1 or space.tensor_sets[0] != space.spec.tensor_names:
            raise InvalidConfigError(
                "encoding 'combined' places whole layers at one rank: switch on the rules rank-one and "
                "whole-layers (they apply to its rank-1 layers; the keep ratios set the other ranks)"
            )

    def params(self) -> list[Param]:
        space = self.space
        out = [Param("n_layers", "int", 0, space.max_layers)]
        out += [Param(f"gap_{i}", "float", 0.0, 1.0) for i in range(space.max_layers + 1)]
        return [*out, Param("keep", "float", space.keep_min, 1.0), Param("slope", "float", -1.0, 1.0),
                *self._method_param()]

    def _n_layers(self, params: Mapping[str, Any]) -> int:
        return int(params["n_layers"])

    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        space = self.space
        spec = space.spec
        n = self._n_layers(params)
        deleted = super().decode(params).layers if n else ()
        keep, slope = float(params["keep"]), float(params["slope"])
        method = self._method(params)
        ranks: dict[str, int] = {}
        for layer in space.layers:
            layer_keep = profile_keep(space.layers, space.keep_min, keep, slope, layer)
            if layer not in deleted and layer_keep < UNTOUCHED:
                ranks |= {f"{layer}:{t.name}": rank_for_keep(t.out_features, t.in_features, layer_keep)
                          for t in spec.tensors}
        one_method = space.rank_one_method or method
        if not ranks:  # rank-1 layers only: the paper's γ, as the gaps encoding gives it, by one_method
            return DecompositionConfig(layers=deleted, rank=space.ranks[0], method=one_method) if deleted \
                else DecompositionConfig()
        rank_one = {f"{layer}:{t.name}": min(space.ranks[0], t.rank) for layer in deleted for t in spec.tensors}
        layers = tuple(sorted({int(key.split(":")[0]) for key in ranks | rank_one}))
        per_pair = dict.fromkeys(rank_one, one_method) if one_method != method else {}
        return DecompositionConfig(layers=layers, tensors="all", rank=None, ranks=ranks | rank_one, method=method,
                                   methods=per_pair or None, two_factor=True)

    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        """Parameters of a rank-1 layer set (a Table IV seed) with nothing else compressed."""
        params = super().encode(gamma)
        if params is None:
            return None
        params["n_layers"] = len(gamma.layers)
        params |= {"keep": 1.0, "slope": 0.0}
        if len(self.methods) > 1:
            params["method"] = gamma.method or self.methods[0]
        return params


ENCODINGS.register(CombinedEncoding.name, CombinedEncoding)
