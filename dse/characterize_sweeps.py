"""The paper's characterization sweeps (Figs. 5–11) as lists of fixed configurations.

Each sweep turns a model's :class:`~space.spec.ModelSpec` into the γ it measures, with a
``series`` (the line a point belongs to in the sweep's figure) and an ``x`` (its place
on that line). Pure Python on the spec: nothing here loads a model or opens a database,
so ``dse characterize --help`` and the tests of the point lists stay cheap.

The layer sets of the paper (Llama-2-7B, 32 layers, 1-based) are scaled to the model's
depth by the engine's own Table IV scaling (:func:`space.paper.scale_paper_layers`),
never by a copy of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from space.config import DecompositionConfig
from space.metrics import parameter_report
from space.registry import Registry
from space.spec import ModelSpec

__all__ = ["SweepPoint", "SWEEPS", "SWEEP_NAMES", "sweep_points", "table_iv_layer_sets",
           "paper_ranks", "FIRST_ALLOWED_LAYER"]

# The paper's heuristics skip the first two layers (Obs. 3); its Fig. 9 starts at layer 3
# (1-based), which is 0-based layer 2 on any model deep enough.
FIRST_ALLOWED_LAYER = 2
# Fig. 5: ranks 250 and 500 of Llama-2-7B's 4096 hidden units, and fractions of full rank.
_PAPER_HIDDEN = 4096
_PAPER_RANKS = (250, 500)
_RANK_FRACTIONS = (0.25, 0.5, 0.75)


@dataclass(frozen=True)
class SweepPoint:
    """One configuration of a sweep: γ, the figure line it belongs to and its x value."""

    gamma: DecompositionConfig
    series: str
    x: float
    label: str


def _point(gamma: DecompositionConfig, series: str, x: float, label: str) -> SweepPoint:
    return SweepPoint(gamma=gamma, series=series, x=float(x), label=label)


def table_iv_layer_sets(spec: ModelSpec) -> list[tuple[str, tuple[int, ...]]]:
    """Every Table IV row scaled to ``spec``'s depth: ``(paper label, 0-based layers)``.

    The engine's own scaling (:func:`space.paper.scale_paper_layers`, as the studies'
    seeds use it), over every layer: the paper's rows as printed, moved onto this model.
    Rows that land on a layer set already listed (shallow models) are left out.
    """
    from space.paper import PAPER_TABLE_IV, scale_paper_layers

    out: list[tuple[str, tuple[int, ...]]] = []
    for label, layers in PAPER_TABLE_IV:
        scaled = scale_paper_layers(layers, spec.n_layers)
        if all(scaled != seen for _, seen in out):
            out.append((label, scaled))
    return out


def paper_ranks(spec: ModelSpec) -> list[tuple[str, int]]:
    """Fig. 5's ranks on this model, as ``(label, rank)``, deduplicated.

    Rank 1; 250 and 500 of 4096 scaled to the hidden size; and 25/50/75 % of the smallest
    tensor's full rank (one uniform rank must fit every tensor, e.g. SmolLM2's 192-wide
    k and v).
    """
    smallest = min(t.rank for t in spec.tensors)
    hidden = max(t.rank for t in spec.tensors)
    out: list[tuple[str, int]] = [("rank 1", 1)]
    for paper in _PAPER_RANKS:
        out.append((f"{paper}/{_PAPER_HIDDEN} scaled", max(1, min(smallest, round(paper * hidden / _PAPER_HIDDEN)))))
    for fraction in _RANK_FRACTIONS:
        out.append((f"{fraction:.0%} of full rank {smallest}", max(1, round(fraction * smallest))))
    seen: set[int] = set()
    unique = []
    for label, rank in out:
        if rank not in seen:
            seen.add(rank)
            unique.append((label, rank))
    return unique


def _rank_sweep(spec: ModelSpec) -> list[SweepPoint]:
    """Fig. 5: all tensors of the Table IV 6 % and 9 % layer sets at each rank."""
    points = []
    for row, layers in table_iv_layer_sets(spec)[:2]:
        for label, rank in paper_ranks(spec):
            gamma = DecompositionConfig(layers=layers, tensors="all", rank=rank)
            points.append(_point(gamma, f"layers {list(layers)} (Table IV {row})", rank, label))
    return points


def _tensor_sweep(spec: ModelSpec) -> list[SweepPoint]:
    """Fig. 6: one tensor type in every layer at rank 1, for each type."""
    every = tuple(range(spec.n_layers))
    return [
        _point(DecompositionConfig(layers=every, tensors=(name,), rank=1), "one tensor type, all layers", i, name)
        for i, name in enumerate(spec.tensor_names)
    ]


def spread_layers(spec: ModelSpec, count: int) -> tuple[int, ...]:
    """``count`` layers evenly spread over FIRST_ALLOWED_LAYER..last (Table IV's shape)."""
    low = min(FIRST_ALLOWED_LAYER, spec.n_layers - 1)
    high = spec.n_layers - 1
    count = max(1, min(count, high - low + 1))
    if count == 1:
        return ((low + high) // 2,)
    return tuple(sorted({round(low + k * (high - low) / (count - 1)) for k in range(count)}))


def _groups_sweep(spec: ModelSpec) -> list[SweepPoint]:
    """Fig. 7: one tensor type in all layers vs all tensors in equally few layers.

    The few layers give the same parameter reduction (the nearest whole number of
    layers, at least one), spread like Table IV's rows.
    """
    points = []
    every = tuple(range(spec.n_layers))
    one_layer = parameter_report(spec, DecompositionConfig(layers=(spec.n_layers // 2,), tensors="all", rank=1))
    per_layer = one_layer.param_reduction_pct
    for i, name in enumerate(spec.tensor_names):
        many = DecompositionConfig(layers=every, tensors=(name,), rank=1)
        reduction = parameter_report(spec, many).param_reduction_pct
        count = max(1, round(reduction / per_layer)) if per_layer > 0 else 1
        few = DecompositionConfig(layers=spread_layers(spec, count), tensors="all", rank=1)
        points.append(_point(many, "one tensor type in all layers", i, name))
        points.append(_point(few, "all tensors in few layers", i, f"{name}-equivalent: all tensors, {count} layer(s)"))
    return points


def _layer_sweep(spec: ModelSpec) -> list[SweepPoint]:
    """Fig. 8: every layer alone, all tensors at rank 1."""
    return [
        _point(DecompositionConfig(layers=(layer,), tensors="all", rank=1), "single layer", layer, f"layer {layer}")
        for layer in range(spec.n_layers)
    ]


def _distance_sweep(spec: ModelSpec) -> list[SweepPoint]:
    """Fig. 9: five layers from the first allowed layer at distance 1…6 (those that fit)."""
    start = min(FIRST_ALLOWED_LAYER, spec.n_layers - 1)
    points = []
    for distance in range(1, 7):
        layers = tuple(start + k * distance for k in range(5))
        if layers[-1] < spec.n_layers:
            gamma = DecompositionConfig(layers=layers, tensors="all", rank=1)
            points.append(_point(gamma, "five layers", distance, f"distance {distance}"))
    return points


def _case_study(spec: ModelSpec) -> list[SweepPoint]:
    """Figs. 10–11: Table IV's layer sets scaled to the model, all tensors at rank 1."""
    points = []
    for row, layers in table_iv_layer_sets(spec):
        gamma = DecompositionConfig(layers=layers, tensors="all", rank=1)
        reduction = parameter_report(spec, gamma).param_reduction_pct
        points.append(_point(gamma, "Table IV scaled", reduction, f"Table IV {row}"))
    return points


SWEEPS: Registry[Callable[[ModelSpec], list[SweepPoint]]] = Registry("sweep")
for _name, _make in (("rank", _rank_sweep), ("tensors", _tensor_sweep), ("groups", _groups_sweep),
                     ("layers", _layer_sweep), ("distance", _distance_sweep), ("case-study", _case_study)):
    SWEEPS.register(_name, _make)
SWEEP_NAMES: tuple[str, ...] = ("rank", "tensors", "groups", "layers", "distance", "case-study")


def sweep_points(spec: ModelSpec, sweep: str) -> list[SweepPoint]:
    """The points of one sweep on ``spec``, in figure order.

    A γ may appear twice (two lines of a figure can share a point); the study measures
    it once.

    Raises:
        UnknownNameError: ``sweep`` is not one of :data:`SWEEP_NAMES` (the message lists them).
    """
    return SWEEPS.get(sweep)(spec)
