"""γ as Optuna parameters, and back.

Three encodings, each a fixed set of parameters (the same names and ranges in every
trial, which multivariate TPE, NSGA-II and GP need):

``full``
    The whole space of Theorem 1: one yes/no per layer (``layer_0`` …), one per tensor
    (``tensor_q`` …), and the rank. It knows nothing of the rules, so a γ it proposes
    may violate one; such a γ is rejected before any measurement (see the runner).
``gaps`` (default)
    Only γ the active rules allow, by construction: the number of decomposed layers
    ``n_layers``, and weights ``gap_0 … gap_M`` in [0, 1] that share the free room
    among the gaps before, between and after the layers. Between two layers there is
    always the rule's minimum distance D, before the first the skipped early layers,
    after the last the skipped late ones. Every allowed layer set has parameters that
    give it, so the paper's configurations can be enqueued exactly.
``spacing``
    The paper's shape, evenly spaced layers: ``n_layers``, the position of the first
    layer and the spacing (both in [0, 1], scaled to what the rules leave). A smaller
    space; only evenly spaced layer sets are in it.

The tensor set (a categorical over the sets the rules allow, e.g. only "all" under
``whole-layers``) and the rank (only 1 under ``rank-one``) are shared by the compact
encodings.

One module because the three encodings share their parameter helpers and registry, and the
Table IV seeds are encoded through them; the searched space itself is :mod:`dse.study.search_space`.
"""

from __future__ import annotations

import abc
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from dse.study.search_space import SearchSpace, build_search_space, check_gamma, tensor_label
from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.paper import PAPER_TABLE_IV, scale_paper_layers
from space.registry import Registry

if TYPE_CHECKING:
    import optuna

# SearchSpace, build_search_space and check_gamma live in dse.study.search_space; they are
# named here too while callers move over.
__all__ = [
    "RejectedGamma",
    "Param",
    "SearchSpace",
    "Encoding",
    "FullEncoding",
    "GapsEncoding",
    "SpacingEncoding",
    "ENCODINGS",
    "build_search_space",
    "make_encoding",
    "check_gamma",
    "PAPER_TABLE_IV",
    "paper_configs",
]


class RejectedGamma(Exception):  # noqa: N818 - a control-flow signal (pruned γ), not a user error
    """The parameters do not describe a γ the study may measure (``reason`` says why)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Param:
    """One Optuna parameter: ``kind`` is ``int``, ``float`` or ``categorical``.

    ``step`` puts a float on a grid (``low``, ``low + step``, …, ``high``): every γ a
    sampler can propose is then one of finitely many, so a table measured once per
    grid point can answer any trial (``benchmarks/bench_search.py`` replays one).
    """

    name: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    log: bool = False
    choices: tuple[Any, ...] = ()
    step: float | None = None

    def suggest(self, trial: optuna.trial.Trial) -> Any:
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step)
        return trial.suggest_categorical(self.name, list(self.choices))


def _rank_param(space: SearchSpace) -> list[Param]:
    if len(space.ranks) == 1:
        return []
    ranks = space.ranks
    if list(ranks) == list(range(ranks[0], ranks[-1] + 1)):
        return [Param("rank", "int", ranks[0], ranks[-1], log=ranks[0] >= 1 and ranks[-1] > 8)]
    return [Param("rank", "categorical", choices=tuple(ranks))]


def _rank_from(space: SearchSpace, params: Mapping[str, Any], tensors: Sequence[str]) -> int:
    rank = int(params["rank"]) if len(space.ranks) > 1 else space.ranks[0]
    # A rank beyond a chosen tensor's min(H, W) is clipped (the compact encodings stay valid).
    return min(rank, *(space.spec.tensor(name).rank for name in tensors))


class Encoding(abc.ABC):
    """γ ↔ Optuna parameters for one search space.

    Subclasses say which parameters exist (the same in every trial), how a full set of
    values decodes to γ, and which values give a particular γ (for enqueued seeds).
    """

    name: ClassVar[str]
    by_construction: ClassVar[bool]
    #: Whether γ are kept-parameter ratios on every allowed layer (else layer sets at a rank).
    keeps_ratios: ClassVar[bool] = False
    #: Whether γ mix rank-1 layers (the rules apply to them) with keep-ratio layers (``combined``).
    mixes_deletions: ClassVar[bool] = False

    def __init__(self, space: SearchSpace) -> None:
        self.space = space

    @abc.abstractmethod
    def params(self) -> list[Param]:
        """The parameters, identical in every trial."""

    @abc.abstractmethod
    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        """γ for a full set of parameter values (raises RejectedGamma when there is none)."""

    @abc.abstractmethod
    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        """Parameters that decode to γ, or None when γ is outside this encoding."""

    def suggest(self, trial: optuna.trial.Trial) -> DecompositionConfig:
        """Ask the trial for every parameter, then decode (called once per trial)."""
        return self.decode({p.name: p.suggest(trial) for p in self.params()})


class FullEncoding(Encoding):
    """One Optuna parameter per layer and tensor and one for the rank: the paper's γ as is."""

    name = "full"
    by_construction = False

    def params(self) -> list[Param]:
        # The rank is searched over the ranks the rules allow (only 1 under rank-one):
        # a rank dimension that is all rejections would teach the sampler nothing.
        spec = self.space.spec
        out = [Param(f"layer_{i}", "categorical", choices=(False, True)) for i in range(spec.n_layers)]
        out += [Param(f"tensor_{t}", "categorical", choices=(False, True)) for t in spec.tensor_names]
        return out + _rank_param(self.space)

    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        spec = self.space.spec
        layers = tuple(i for i in range(spec.n_layers) if params[f"layer_{i}"])
        tensors = tuple(t for t in spec.tensor_names if params[f"tensor_{t}"])
        rank = int(params["rank"]) if len(self.space.ranks) > 1 else self.space.ranks[0]
        if not layers:
            return DecompositionConfig()
        if not tensors:
            raise RejectedGamma("no tensor chosen: a decomposed layer needs at least one tensor (Def. 2)")
        return DecompositionConfig(layers=layers, tensors="all" if tensors == spec.tensor_names else tensors,
                                   rank=rank)

    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        spec = self.space.spec
        form = gamma.canonical(spec)
        if not isinstance(form["rank"], int):
            return None
        params: dict[str, Any] = {f"layer_{i}": i in form["layers"] for i in range(spec.n_layers)}
        params |= {f"tensor_{t}": t in form["tensors"] for t in spec.tensor_names}
        if len(self.space.ranks) > 1:
            params["rank"] = form["rank"]
        return params


class _CompactEncoding(Encoding):
    by_construction = True

    def __init__(self, space: SearchSpace) -> None:
        super().__init__(space)
        layers = space.layers
        if list(layers) != list(range(layers[0], layers[-1] + 1)):
            raise InvalidConfigError(
                f"encoding {self.name!r} needs the allowed layers to be one contiguous range, got "
                f"{list(layers)}; use encoding = \"full\""
            )
        self.low, self.high = layers[0], layers[-1]

    def _shared_params(self) -> list[Param]:
        out: list[Param] = []
        if self.space.max_layers > self.space.min_layers:
            out.append(Param("n_layers", "int", self.space.min_layers, self.space.max_layers))
        if len(self.space.tensor_sets) > 1:
            out.append(Param("tensors", "categorical", choices=self.space.tensor_labels))
        return out + _rank_param(self.space)

    def _n_layers(self, params: Mapping[str, Any]) -> int:
        return int(params["n_layers"]) if self.space.max_layers > self.space.min_layers else self.space.min_layers

    def _gamma(self, layers: Sequence[int], params: Mapping[str, Any]) -> DecompositionConfig:
        space = self.space
        tensors = space.tensors_for_label(params["tensors"]) if len(space.tensor_sets) > 1 else space.tensor_sets[0]
        rank = _rank_from(space, params, tensors)
        return DecompositionConfig(
            layers=tuple(layers), tensors="all" if tensors == space.spec.tensor_names else tensors, rank=rank
        )

    def _shared_encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        space = self.space
        if check_gamma(space, gamma) is not None:
            return None
        form = gamma.canonical(space.spec)
        if not isinstance(form["rank"], int):
            return None
        params: dict[str, Any] = {}
        if space.max_layers > space.min_layers:
            params["n_layers"] = len(form["layers"])
        if len(space.tensor_sets) > 1:
            params["tensors"] = tensor_label(space.spec, form["tensors"])
        if len(space.ranks) > 1:
            params["rank"] = form["rank"]
        return params


def _share(total: int, weights: Sequence[float]) -> list[int]:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    clean = [max(0.0, float(w)) if math.isfinite(float(w)) else 0.0 for w in weights]
    weight_sum = sum(clean)
    if weight_sum <= 0.0:
        clean, weight_sum = [1.0] * len(clean), float(len(clean))
    ideal = [w / weight_sum * total for w in clean]
    parts = [math.floor(x) for x in ideal]
    left = total - sum(parts)
    order = sorted(range(len(ideal)), key=lambda i: (-(ideal[i] - parts[i]), i))
    for i in order[:left]:
        parts[i] += 1
    return parts


class GapsEncoding(_CompactEncoding):
    """Layers placed by normalized gaps: valid by construction under the spacing rules."""

    name = "gaps"

    def params(self) -> list[Param]:
        weights = [Param(f"gap_{i}", "float", 0.0, 1.0) for i in range(self.space.max_layers + 1)]
        return self._shared_params() + weights

    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        n = self._n_layers(params)
        gap = self.space.min_gap
        slack = (self.high - self.low) - (n - 1) * gap
        extra = _share(slack, [params[f"gap_{i}"] for i in range(n + 1)])
        layers, layer = [], self.low + extra[0]
        for k in range(n):
            if k:
                layer += gap + extra[k]
            layers.append(layer)
        return self._gamma(layers, params)

    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        params = self._shared_encode(gamma)
        if params is None:
            return None
        layers = sorted(gamma.layers)
        gap = self.space.min_gap
        extra = [layers[0] - self.low]
        extra += [b - a - gap for a, b in itertools.pairwise(layers)]
        extra.append(self.high - layers[-1])
        slack = sum(extra)
        weights = [e / slack if slack else 0.5 for e in extra]
        weights += [0.5] * (self.space.max_layers + 1 - len(weights))
        params |= {f"gap_{i}": w for i, w in enumerate(weights)}
        return params


class SpacingEncoding(_CompactEncoding):
    """Layers as a first layer and an even spacing: a two-parameter, valid-by-construction γ."""

    name = "spacing"

    def params(self) -> list[Param]:
        return [*self._shared_params(), Param("first", "float", 0.0, 1.0), Param("spacing", "float", 0.0, 1.0)]

    def _spacing_bounds(self, n: int) -> tuple[int, int]:
        gap = self.space.min_gap
        if n == 1:
            return gap, gap
        return gap, max(gap, (self.high - self.low) // (n - 1))

    def decode(self, params: Mapping[str, Any]) -> DecompositionConfig:
        n = self._n_layers(params)
        low_s, high_s = self._spacing_bounds(n)
        spacing = low_s + round(float(params["spacing"]) * (high_s - low_s))
        room = (self.high - self.low) - (n - 1) * spacing
        first = self.low + round(float(params["first"]) * room)
        return self._gamma([first + k * spacing for k in range(n)], params)

    def encode(self, gamma: DecompositionConfig) -> dict[str, Any] | None:
        params = self._shared_encode(gamma)
        if params is None:
            return None
        layers = sorted(gamma.layers)
        steps = {b - a for a, b in itertools.pairwise(layers)}
        if len(steps) > 1:
            return None  # not evenly spaced: outside this encoding
        n = len(layers)
        low_s, high_s = self._spacing_bounds(n)
        spacing = steps.pop() if steps else low_s
        room = (self.high - self.low) - (n - 1) * spacing
        params["spacing"] = (spacing - low_s) / (high_s - low_s) if high_s > low_s else 0.5
        params["first"] = (layers[0] - self.low) / room if room else 0.5
        return params


ENCODINGS: Registry[type[Encoding]] = Registry("encoding")
for _cls in (FullEncoding, GapsEncoding, SpacingEncoding):
    ENCODINGS.register(_cls.name, _cls)


def make_encoding(name: str, space: SearchSpace) -> Encoding:
    """The encoding registered as ``name`` over ``space`` (unknown names list the known ones)."""
    return ENCODINGS.get(name)(space)


# The keep-ratio encodings (ratios, profile, spectrum) and combined register themselves on import.
from dse.study import encoding_combined as _encoding_combined  # noqa: E402, F401
from dse.study import encoding_ratios as _encoding_ratios  # noqa: E402, F401


@dataclass(frozen=True)
class PaperConfig:
    """One Table IV row scaled to a model: its label, γ and the encoded parameters."""

    label: str
    gamma: DecompositionConfig
    params: dict[str, Any] = field(default_factory=dict)


def paper_configs(encoding: Encoding, *, limit: int) -> tuple[list[PaperConfig], list[str]]:
    """The first ``limit`` Table IV configurations the study can use, and why others were skipped.

    Each row is scaled to the model's depth by :func:`space.paper.scale_paper_layers`,
    into the range of layers the rules allow, with all tensors at the smallest searched
    rank (the paper's rank 1). Rows the active rules still exclude (e.g. layers closer
    than min-distance), or that the encoding cannot express, are skipped.
    """
    space = encoding.space
    spec = space.spec
    taken: list[PaperConfig] = []
    skipped: list[str] = []
    seen: set[tuple[int, ...]] = set()
    for reduction, layers_1based in PAPER_TABLE_IV:
        if len(taken) >= limit:
            break
        scaled = scale_paper_layers(layers_1based, spec.n_layers, low=space.layers[0], high=space.layers[-1])
        label = f"Table IV {reduction} {{{','.join(str(x) for x in layers_1based)}}} -> L[{','.join(map(str, scaled))}]"
        if scaled in seen:
            continue
        seen.add(scaled)
        gamma = DecompositionConfig(layers=scaled, tensors="all", rank=space.ranks[0])
        why = check_gamma(space, gamma)
        if why is not None:
            skipped.append(f"{label}: {why}")
            continue
        params = encoding.encode(gamma)
        if params is None:
            skipped.append(f"{label}: not expressible in encoding {encoding.name!r}")
            continue
        # What the trial will measure: the encoding's own form of γ (e.g. two factors in ``combined``).
        taken.append(PaperConfig(label=label, gamma=encoding.decode(params), params=params))
    return taken, skipped
