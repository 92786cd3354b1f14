"""What a study searches: the space the rules and the ``search`` bounds leave, for one model.

:func:`build_search_space` turns the rules and bounds into the allowed layers, their
least distance, the tensor sets and the ranks (refusing, with the rule to blame, a
space with nothing in it); :func:`check_gamma` says why the study may not measure a γ
(a rule, the layer bounds, the searched ranks) before any measurement. The encodings
(:mod:`dse.study.encoding`) map this space to Optuna parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from space.config import DecompositionConfig, rank_for_keep
from space.errors import InvalidConfigError
from space.rules import (
    RuleSet,
    allowed_layers,
    allowed_ranks,
    allowed_tensor_sets,
    min_layer_gap,
    require_candidates,
)
from space.spec import ModelSpec

__all__ = ["SearchSpace", "build_search_space", "check_gamma", "tensor_label", "ranks_label"]


@dataclass(frozen=True)
class SearchSpace:
    """What the rules and the definition leave to search, for one model."""

    spec: ModelSpec
    rules: RuleSet
    layers: tuple[int, ...]  # allowed layers, sorted
    min_gap: int
    tensor_sets: tuple[tuple[str, ...], ...]
    ranks: tuple[int, ...]
    min_layers: int
    max_layers: int
    methods: tuple[str, ...] = ()  # searched by the keep-ratio encodings
    keep_min: float = 0.5
    min_reduction_pct: float | None = None  # the parameter budget (γ below it are rejected)
    model: str = ""  # what the spectrum encoding reads weights from
    mixes_deletions: bool = False  # the combined encoding: rank-1 layers under the rules, keep ratios elsewhere
    rank_one_method: str | None = None  # combined: the rank-1 layers' method (None: the keep layers')

    @property
    def tensor_labels(self) -> tuple[str, ...]:
        return tuple(tensor_label(self.spec, names) for names in self.tensor_sets)

    def tensors_for_label(self, label: str) -> tuple[str, ...]:
        return self.tensor_sets[self.tensor_labels.index(label)]


def tensor_label(spec: ModelSpec, names: Sequence[str]) -> str:
    """``all`` for every tensor of the spec, else the names joined by commas (a categorical's value)."""
    return "all" if tuple(names) == spec.tensor_names else ",".join(names)


def _spaced_layers(layers: Sequence[int], gap: int, limit: int | None = None) -> list[int]:
    """The most layers (at most ``limit``) taken greedily from the first, ``gap`` apart."""
    chosen: list[int] = []
    for layer in layers:
        if (limit is None or len(chosen) < limit) and (not chosen or layer - chosen[-1] >= gap):
            chosen.append(layer)
    return chosen


def _max_layers_with_gap(layers: Sequence[int], gap: int) -> int:
    return len(_spaced_layers(layers, gap))


def build_search_space(
    spec: ModelSpec,
    rules: RuleSet | Mapping[str, int | None],
    *,
    min_layers: int = 1,
    max_layers: int | None = None,
    max_rank: int | None = None,
    methods: Sequence[str] = ("svd",),
    keep_min: float = 0.5,
    min_reduction_pct: float | None = None,
    model: str = "",
    mixes_deletions: bool = False,
    rank_one_method: str | None = None,
) -> SearchSpace:
    """Apply the rules and a study's bounds (its ``search`` section) to ``spec``.

    Args:
        spec: the model's architecture.
        rules: the switched-on rules (a study definition's ``rules``).
        min_layers: the fewest layers a γ decomposes (``search.min_layers``).
        max_layers: the most (``search.max_layers``; None: as many as the rules allow).
        max_rank: the largest rank searched (``search.max_rank``; None: the largest that
            still compresses, or the rank-one rule's value).
        methods: what the keep-ratio encodings choose among (``search.methods``).
        keep_min: their smallest kept-parameter ratio (``search.keep_min``).
        min_reduction_pct: the parameter budget; γ below it are rejected unmeasured.
        model: the model the spectrum encoding reads weights from.
        mixes_deletions: γ mix rank-1 layers with keep-ratio layers (the ``combined``
            encoding); the rules then apply to the rank-1 layers.
        rank_one_method: how the combined encoding factors its rank-1 layers (None: the
            method of its keep-ratio layers).

    Raises:
        InvalidConfigError: the rules (or the layer bounds) leave nothing to search; the
            message names the rule that empties the space.
    """
    from space.metrics import max_compressing_rank

    if not isinstance(rules, RuleSet):
        rules = RuleSet(rules=dict(rules))
    smallest = min(t.rank for t in spec.tensors)
    if max_rank is not None:
        if max_rank > smallest:
            raise InvalidConfigError(
                f"search.max_rank {max_rank} is above the smallest tensor rank of {spec.name} "
                f"({smallest}); allowed 1..{smallest}"
            )
        rank_bound = max_rank
    else:
        compressing = min(max_compressing_rank(t.out_features, t.in_features) for t in spec.tensors)
        fixed_rank = rules.value("rank-one") if rules.is_on("rank-one") else None
        rank_bound = min(smallest, max(1, compressing, fixed_rank or 1))
    require_candidates(spec, rules, rank=rank_bound)
    layers = allowed_layers(spec, rules)
    gap = min_layer_gap(rules)
    tensor_sets = tuple(allowed_tensor_sets(spec, rules))
    ranks = tuple(allowed_ranks(spec, rules, rank=rank_bound))
    most = _max_layers_with_gap(layers, gap)
    max_layers = min(most, max_layers) if max_layers is not None else most
    if min_layers > most:
        spacing = ("skip-early", "skip-late", "min-distance")
        labels = [label for label in rules.labels() if label.split("=")[0] in spacing]
        raise InvalidConfigError(
            f"search.min_layers = {min_layers} cannot be met: "
            f"{' with '.join(labels) or 'the model'} leave at most {most} decomposable layer(s) in {spec.name}"
        )
    return SearchSpace(spec=spec, rules=rules, layers=layers, min_gap=gap, tensor_sets=tensor_sets,
                       ranks=ranks, min_layers=min_layers, max_layers=max_layers,
                       methods=tuple(methods), keep_min=keep_min,
                       min_reduction_pct=min_reduction_pct, model=model, mixes_deletions=mixes_deletions,
                       rank_one_method=rank_one_method)


def check_budget_reachable(space: SearchSpace, *, keep_ratios: bool) -> None:
    """Refuse a parameter budget no γ of the space meets (else every proposal is rejected, unmeasured).

    The most a space removes: every allowed layer at ``keep_min`` (the keep-ratio
    encodings), or the most layers the spacing allows at the smallest rank (the others).

    Raises:
        InvalidConfigError: ``min_reduction_pct`` is above that, in one line.
    """
    from space.metrics import parameter_report

    budget = space.min_reduction_pct
    if budget is None:
        return
    if space.mixes_deletions:
        gamma = _deletions_and_keep(space, _spaced_layers(space.layers, space.min_gap, space.max_layers))
        how = f"rank-{min(space.ranks)} layers as spaced as the rules allow, the rest at keep {space.keep_min:g}"
    elif keep_ratios:
        gamma = DecompositionConfig(layers=tuple(space.layers), keep=space.keep_min)
        how = f"every allowed layer at search.keep_min = {space.keep_min:g}"
    else:
        spaced = _spaced_layers(space.layers, space.min_gap, space.max_layers)
        gamma = DecompositionConfig(layers=tuple(spaced), rank=min(space.ranks))
        how = f"{len(spaced)} layer(s) at rank {min(space.ranks)}"
    most = parameter_report(space.spec, gamma).param_reduction_pct
    if most < budget:
        raise InvalidConfigError(
            f"min_param_reduction_pct = {budget:g} is out of reach: this space removes at most {most:.2f} % of "
            f"{space.spec.name}'s parameters ({how}); lower the budget or widen the space"
        )


def _deletions_and_keep(space: SearchSpace, deleted: Sequence[int]) -> DecompositionConfig:
    """γ of the combined encoding: ``deleted`` at the smallest rank, every other allowed layer at keep_min."""
    ranks = {f"{layer}:{t.name}": (min(space.ranks[0], t.rank) if layer in deleted
                                   else rank_for_keep(t.out_features, t.in_features, space.keep_min))
             for layer in space.layers for t in space.spec.tensors}
    return DecompositionConfig(layers=tuple(space.layers), rank=None, ranks=ranks, two_factor=True)


def _rank_one_layers(space: SearchSpace, gamma: DecompositionConfig) -> tuple[int, ...]:
    """The layers of a combined γ whose every tensor sits at the smallest searched rank."""
    smallest = space.ranks[0]
    ranks = gamma.ranks or {}
    return tuple(layer for layer in gamma.layers
                 if all(ranks.get(f"{layer}:{t.name}", 0) <= smallest for t in space.spec.tensors))


def _check_combined(space: SearchSpace, gamma: DecompositionConfig) -> str | None:
    """The rules and layer bounds on a combined γ's rank-1 layers; its other layers must be allowed."""
    deleted = _rank_one_layers(space, gamma)
    outside = sorted(set(gamma.layers) - set(space.layers))
    if outside:
        return f"layer {outside[0]} is outside the allowed layers {list(space.layers)}"
    if len(deleted) > space.max_layers:
        return f"{len(deleted)} rank-{space.ranks[0]} layers, above search.max_layers = {space.max_layers}"
    if deleted:
        verdict = space.rules.allows(space.spec, DecompositionConfig(layers=deleted, rank=space.ranks[0]))
        if not verdict.allowed:
            return f"rank-{space.ranks[0]} layers: {verdict.reason}"
    return None


def check_gamma(space: SearchSpace, gamma: DecompositionConfig) -> str | None:
    """Why the study may not measure γ (a rule, the layer bounds), or None when it may."""
    try:
        pairs = gamma.validate_for(space.spec)
    except InvalidConfigError as exc:
        return f"invalid: {exc}"
    if not pairs:
        return "decomposes nothing: the original model is the baseline, not a trial"
    if space.mixes_deletions and gamma.is_two_factor() and gamma.ranks is not None:
        why = _check_combined(space, gamma)  # the rules bind its rank-1 layers only
    else:
        verdict = space.rules.allows(space.spec, gamma)
        why = None if verdict.allowed else verdict.reason
    if why is not None:
        return why
    if space.min_reduction_pct is not None:
        from space.metrics import parameter_report

        reduction = parameter_report(space.spec, gamma).param_reduction_pct
        if reduction < space.min_reduction_pct:
            return (f"removes {reduction:.2f} % of the parameters, below the budget of "
                    f"{space.min_reduction_pct:g} % (min_param_reduction_pct)")
    if gamma.is_two_factor():
        return None  # keep-ratio γ: per-tensor ranks, all layers the rules allow
    n = len(gamma.layers)
    if not space.min_layers <= n <= space.max_layers:
        return f"{n} decomposed layers, outside search.min_layers..max_layers = {space.min_layers}..{space.max_layers}"
    ranks = {p.rank for p in pairs}
    if not ranks <= set(space.ranks):
        return f"rank {sorted(ranks - set(space.ranks))[0]} is outside the searched ranks {ranks_label(space.ranks)}"
    return None


def ranks_label(ranks: Sequence[int]) -> str:
    """``lo..hi`` for several ranks, the rank alone for one."""
    return f"{ranks[0]}..{ranks[-1]}" if len(ranks) > 1 else str(ranks[0])
