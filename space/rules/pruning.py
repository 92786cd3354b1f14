"""The space the rules leave: allowed layers, tensor sets and ranks, and its exact size.

The study's encodings search these choices and ``dse space size`` reports them; the
counts use the same rule hooks as :meth:`space.rules.RuleSet.allows`, so the count and
the judgement of one γ cannot drift apart.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from space.counting import base_ranks, count_configs, log2_size, space_size, tensor_subsets
from space.errors import InvalidConfigError
from space.rules.ruleset import RuleSet
from space.spec import ModelSpec

__all__ = [
    "RuleEffect",
    "PrunedSpace",
    "allowed_layers",
    "min_layer_gap",
    "allowed_tensor_sets",
    "allowed_ranks",
    "pruned_size",
    "pruned_candidates",
    "emptying_rules",
    "require_candidates",
    "pruned_report",
]


def allowed_layers(spec: ModelSpec, rules: RuleSet) -> tuple[int, ...]:
    """The layers (0-based) the rules let a γ decompose."""
    return tuple(
        layer
        for layer in range(spec.n_layers)
        if all(rule.layer_allowed(spec, layer, value) for rule, value in rules.active())
    )


def min_layer_gap(rules: RuleSet) -> int:
    """The least distance between two decomposed layers (1: adjacent layers allowed)."""
    return max([1, *(rule.min_gap(value) for rule, value in rules.active())])


def allowed_tensor_sets(spec: ModelSpec, rules: RuleSet) -> list[tuple[str, ...]]:
    """The non-empty tensor sets a decomposed layer may use, in the spec's order."""
    return [
        names
        for names in tensor_subsets(spec)
        if all(rule.tensors_allowed(spec, names, value) for rule, value in rules.active())
    ]


def allowed_ranks(
    spec: ModelSpec, rules: RuleSet, *, rank: int = 1, fixed: bool = False
) -> list[int]:
    """The pruned ranks the rules keep out of the space's choices (1..rank, or rank).

    A tensor set may use only those of them ≤ the smallest min(H, W) of its tensors.
    """
    return [
        r
        for r in base_ranks(spec, rank=rank, fixed=fixed)
        if all(rule.rank_allowed(r, value) for rule, value in rules.active())
    ]


def pruned_candidates(
    spec: ModelSpec, rules: RuleSet, *, rank: int = 1, fixed: bool = False
) -> int:
    """Decomposed γ the rules allow (the original model not counted): a study's choices."""
    return count_configs(
        spec,
        layers=allowed_layers(spec, rules),
        min_gap=min_layer_gap(rules),
        tensor_sets=allowed_tensor_sets(spec, rules),
        ranks=allowed_ranks(spec, rules, rank=rank, fixed=fixed),
    )


def pruned_size(spec: ModelSpec, rules: RuleSet, *, rank: int = 1, fixed: bool = False) -> int:
    """|pruned space|: the allowed γ plus the original model, comparable with |S_LR|.

    With no rule on it equals :func:`space.counting.space_size`. It is never 0 (the
    original model stays); a rule set that leaves nothing to decompose gives 1, which
    :func:`pruned_candidates` reports as 0 and :func:`require_candidates` as an error.
    """
    return pruned_candidates(spec, rules, rank=rank, fixed=fixed) + 1


def emptying_rules(
    spec: ModelSpec, rules: RuleSet, *, rank: int = 1, fixed: bool = False
) -> list[str]:
    """The rules to blame when nothing is left to decompose ([] when something is).

    A rule is to blame when switching it off alone gives candidates back; when no single
    rule does, every rule acting on the empty part (layers, or tensors and ranks) is.
    """
    if pruned_candidates(spec, rules, rank=rank, fixed=fixed) > 0:
        return []
    blamed = [
        rule.label(value)
        for rule, value in rules.active()
        if pruned_candidates(spec, rules.without(rule.name), rank=rank, fixed=fixed) > 0
    ]
    if blamed:
        return blamed
    if not allowed_layers(spec, rules):
        return [
            rule.label(value)
            for rule, value in rules.active()
            if not all(rule.layer_allowed(spec, layer, value) for layer in range(spec.n_layers))
        ]
    unrestricted = RuleSet.off()
    n_sets = len(allowed_tensor_sets(spec, unrestricted))
    n_ranks = len(allowed_ranks(spec, unrestricted, rank=rank, fixed=fixed))
    return [
        rule.label(value)
        for rule, value in rules.active()
        if len(allowed_tensor_sets(spec, rules.only(rule.name))) < n_sets
        or len(allowed_ranks(spec, rules.only(rule.name), rank=rank, fixed=fixed)) < n_ranks
    ]


def require_candidates(
    spec: ModelSpec, rules: RuleSet, *, rank: int = 1, fixed: bool = False
) -> int:
    """The number of candidates; raise when the rules leave none.

    Raises:
        InvalidConfigError: naming the rule(s) that empty the space.
    """
    count = pruned_candidates(spec, rules, rank=rank, fixed=fixed)
    if count > 0:
        return count
    blamed = emptying_rules(spec, rules, rank=rank, fixed=fixed)
    layers = allowed_layers(spec, rules)
    what = (
        f"no layer of {spec.n_layers} (0..{spec.n_layers - 1}) may be decomposed"
        if not layers
        else f"no tensor set and pruned rank are left of {_rank_label(rank, fixed)}"
    )
    culprit = " with ".join(blamed) if blamed else rules.describe()
    raise InvalidConfigError(
        f"the rules leave nothing to decompose in {spec.name}: {culprit} — {what}; "
        f"change or switch off {'that rule' if len(blamed) == 1 else 'one of them'}"
    )


def _rank_label(rank: int, fixed: bool) -> str:
    return f"PR = {rank}" if fixed else f"PR ∈ 1..{rank}"


class RuleEffect(BaseModel):
    """How much one switched-on rule shrinks the space."""

    model_config = ConfigDict(frozen=True)

    rule: str
    label: str
    alone_size: int  # the full space pruned by this rule alone
    log2_alone_size: float
    alone_shrink_bits: float  # log2(size / alone_size)
    without_size: int  # the pruned space with every other rule of the set
    log2_without_size: float
    marginal_shrink_bits: float  # log2(without_size / pruned_size)


class PrunedSpace(BaseModel):
    """The full space, the space the rules leave, and each rule's share."""

    model_config = ConfigDict(frozen=True)

    model: str
    rank: int
    fixed: bool
    rules: list[str]
    size: int
    log2_size: float
    pruned_size: int
    log2_pruned_size: float
    pruned_candidates: int
    shrink_bits: float
    effects: list[RuleEffect]
    empty_rules: list[str]


def _log2(n: int) -> float:
    value = log2_size(n)
    assert value is not None  # sizes count the original model, so they are ≥ 1
    return value


def pruned_report(
    spec: ModelSpec, rules: RuleSet, *, rank: int = 1, fixed: bool = False
) -> PrunedSpace:
    """Everything ``dse space size`` prints: sizes, log2 sizes and per-rule shrink."""
    size = space_size(spec, rank=rank, fixed=fixed)
    pruned = pruned_size(spec, rules, rank=rank, fixed=fixed)
    effects = []
    for rule, value in rules.active():
        alone = pruned_size(spec, rules.only(rule.name), rank=rank, fixed=fixed)
        without = pruned_size(spec, rules.without(rule.name), rank=rank, fixed=fixed)
        effects.append(
            RuleEffect(
                rule=rule.name,
                label=rule.label(value),
                alone_size=alone,
                log2_alone_size=_log2(alone),
                alone_shrink_bits=_log2(size) - _log2(alone),
                without_size=without,
                log2_without_size=_log2(without),
                marginal_shrink_bits=_log2(without) - _log2(pruned),
            )
        )
    return PrunedSpace(
        model=spec.name,
        rank=rank,
        fixed=fixed,
        rules=rules.labels(),
        size=size,
        log2_size=_log2(size),
        pruned_size=pruned,
        log2_pruned_size=_log2(pruned),
        pruned_candidates=pruned - 1,
        shrink_bits=_log2(size) - _log2(pruned),
        effects=effects,
        empty_rules=emptying_rules(spec, rules, rank=rank, fixed=fixed),
    )
