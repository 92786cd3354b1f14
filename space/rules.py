"""The paper's heuristics (Sections III-C, III-D) as named rules that prune the space.

Each rule is an object in the :data:`RULES` registry with one integer parameter (or
none), and a :class:`RuleSet` says which rules are on and with what value:

========================  =========  =======================================================
rule                      default    keeps a γ when
========================  =========  =======================================================
``rank-one[=P]``          P = 1      every pruned rank is P (heuristic 1: rank hardly matters)
``whole-layers``          (none)     a decomposed layer has all its tensors decomposed (2)
``skip-early[=K]``        K = 2      no decomposed layer is among the first K (3)
``skip-late[=K]``         K = 0      no decomposed layer is among the last K (3)
``min-distance[=D]``      D = 2      any two decomposed layers are at least D apart (4)
========================  =========  =======================================================

A rule acts through one of four hooks — which layers, how far apart, which tensor
sets, which ranks — and the same hooks serve both :meth:`RuleSet.allows` (judge one
γ) and :func:`pruned_size` (count all of them), so the count and the judgement cannot
drift apart. The original model is in every pruned space: the rules only restrict
decompositions. Layers are 0-based.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, model_validator

from space.config import DecompositionConfig
from space.counting import base_ranks, count_configs, log2_size, space_size, tensor_subsets
from space.errors import InvalidConfigError
from space.registry import Registry
from space.spec import ModelSpec

__all__ = [
    "Rule",
    "RULES",
    "RULE_ORDER",
    "rule_names",
    "RuleSet",
    "Verdict",
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


class Rule:
    """One heuristic. Subclasses override the hooks they restrict; the rest allow all.

    ``param`` names the parameter (None: the rule takes none), ``default`` is its value
    when the rule is switched on without one, and ``minimum`` the smallest allowed.
    """

    name: str = ""
    summary: str = ""
    param: str | None = None
    default: int | None = None
    minimum: int = 0

    def layer_allowed(self, spec: ModelSpec, layer: int, value: int | None) -> bool:
        """May ``layer`` be decomposed at all?"""
        return True

    def min_gap(self, value: int | None) -> int:
        """The least distance between two decomposed layers (1: any)."""
        return 1

    def tensors_allowed(self, spec: ModelSpec, names: Sequence[str], value: int | None) -> bool:
        """May a layer decompose exactly these tensors?"""
        return True

    def rank_allowed(self, rank: int, value: int | None) -> bool:
        """May the pruned rank be ``rank``?"""
        return True

    def label(self, value: int | None) -> str:
        """``name=value`` as a user writes it (``name`` alone when parameterless)."""
        return self.name if self.param is None else f"{self.name}={value}"


class RankOne(Rule):
    name = "rank-one"
    summary = "every pruned rank is P (the paper: rank hardly matters, so use 1)"
    param = "P"
    default = 1
    minimum = 1

    def rank_allowed(self, rank: int, value: int | None) -> bool:
        return rank == value


class WholeLayers(Rule):
    name = "whole-layers"
    summary = "decompose all tensors of a decomposed layer (fewer layers, not fewer tensors)"

    def tensors_allowed(self, spec: ModelSpec, names: Sequence[str], value: int | None) -> bool:
        return set(names) == set(spec.tensor_names)


class SkipEarly(Rule):
    name = "skip-early"
    summary = "leave the first K layers (0..K-1) undecomposed"
    param = "K"
    default = 2

    def layer_allowed(self, spec: ModelSpec, layer: int, value: int | None) -> bool:
        assert value is not None
        return layer >= value


class SkipLate(Rule):
    name = "skip-late"
    summary = "leave the last K layers undecomposed"
    param = "K"
    default = 0

    def layer_allowed(self, spec: ModelSpec, layer: int, value: int | None) -> bool:
        assert value is not None
        return layer < spec.n_layers - value


class MinDistance(Rule):
    name = "min-distance"
    summary = "decomposed layers are at least D apart (D=1: adjacent allowed)"
    param = "D"
    default = 2
    minimum = 1

    def min_gap(self, value: int | None) -> int:
        assert value is not None
        return value


RULES: Registry[Rule] = Registry("rule")
# The order rules are shown and applied in; also the order of RuleSet.labels().
RULE_ORDER: tuple[str, ...] = (
    "rank-one", "whole-layers", "skip-early", "skip-late", "min-distance"
)
for _rule in (RankOne(), WholeLayers(), SkipEarly(), SkipLate(), MinDistance()):
    RULES.register(_rule.name, _rule)



def rule_names() -> tuple[str, ...]:
    """Every registered rule, the built-in ones in :data:`RULE_ORDER` first."""
    return RULE_ORDER + tuple(n for n in RULES.names() if n not in RULE_ORDER)


_OFF = {"off", "false", "no"}
_ON = {"on", "true", "yes"}


def _coerce_value(rule: Rule, raw: object) -> int | None:
    """Check one rule's parameter; None means the default."""
    if raw is None or raw is True:
        return rule.default
    if rule.param is None:
        raise InvalidConfigError(
            f"rule {rule.name} takes no value, got {raw!r}; write {rule.name} or {rule.name}=off"
        )
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidConfigError(
            f"bad value {raw!r} for rule {rule.name}: expected an integer ≥ {rule.minimum} "
            f"({rule.param}), or on/off"
        )
    if raw < rule.minimum:
        raise InvalidConfigError(
            f"bad value {raw} for rule {rule.name}: {rule.param} must be ≥ {rule.minimum}"
        )
    return raw


class Verdict(NamedTuple):
    """Whether the rules allow a γ; ``reason`` names the rule that rejects it."""

    allowed: bool
    reason: str


class RuleSet(BaseModel):
    """Which heuristic rules are on, each with its parameter.

    ``rules`` maps a switched-on rule's name to its value (None for a parameterless
    rule); a rule that is not listed is off. Also accepts a list of CLI strings
    (``["skip-early=3", "whole-layers"]``) or a mapping whose values may be True
    (default value) or False (off), as a study file would write it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rules: dict[str, int | None] = {}

    @model_validator(mode="before")
    @classmethod
    def _accept_short_forms(cls, data: Any) -> Any:
        if isinstance(data, (list, tuple)):
            return {"rules": RuleSet.parse(data, start=RuleSet.off()).rules}
        if not isinstance(data, Mapping) or "rules" not in data:
            return data
        given = data["rules"]
        if isinstance(given, (list, tuple)):
            return {"rules": RuleSet.parse(given, start=RuleSet.off()).rules}
        if isinstance(given, Mapping):
            # True: on with the default value; False: off (as a study file may write it).
            rules = {
                name: (None if value is True else value)
                for name, value in given.items()
                if value is not False
            }
            return {**data, "rules": rules}
        return data

    @model_validator(mode="after")
    def _check_rules(self) -> RuleSet:
        for name in self.rules:
            if name not in RULES:
                raise InvalidConfigError(RULES.unknown_message(name))
        cleaned = {
            name: _coerce_value(RULES.get(name), self.rules[name])
            for name in rule_names()
            if name in self.rules
        }
        object.__setattr__(self, "rules", cleaned)
        return self

    # ---- construction ---------------------------------------------------------------

    @classmethod
    def defaults(cls) -> RuleSet:
        """Every rule on with its default value: the paper's pruned space."""
        return cls(rules={name: RULES.get(name).default for name in RULE_ORDER})

    @classmethod
    def off(cls) -> RuleSet:
        """No rule: the full space of Theorem 1."""
        return cls(rules={})

    @classmethod
    def parse(cls, items: Iterable[str], *, start: RuleSet | None = None) -> RuleSet:
        """Apply CLI strings to ``start`` (default: :meth:`defaults`).

        ``NAME`` switches a rule on with its default value, ``NAME=VALUE`` with that
        value, ``NAME=off`` switches it off (``NAME=on`` is ``NAME``).

        Raises:
            UnknownNameError: a rule name is not known (the message lists the rules).
            InvalidConfigError: a value is not an integer in range, or is given to a
                rule that takes none.
        """
        rules = dict((start if start is not None else cls.defaults()).rules)
        for item in items:
            if not isinstance(item, str):
                raise InvalidConfigError(f"a rule is written NAME or NAME=VALUE, got {item!r}")
            name, _, text = item.strip().partition("=")
            name, text = name.strip(), text.strip()
            if not name:
                raise InvalidConfigError(f"malformed rule {item!r}: expected NAME or NAME=VALUE")
            rule = RULES.get(name)
            if not text or text.lower() in _ON:
                rules[name] = rule.default
                continue
            if text.lower() in _OFF:
                rules.pop(name, None)
                continue
            try:
                value: object = int(text)
            except ValueError:
                value = text
            rules[name] = _coerce_value(rule, value)
        return cls(rules=rules)

    # ---- queries --------------------------------------------------------------------

    def is_on(self, name: str) -> bool:
        RULES.get(name)  # an unknown name is an error, not "off"
        return name in self.rules

    def value(self, name: str) -> int | None:
        """The parameter of rule ``name`` (None when off or parameterless)."""
        RULES.get(name)
        return self.rules.get(name)

    def active(self) -> list[tuple[Rule, int | None]]:
        """The switched-on rules with their values, in :data:`RULE_ORDER`."""
        return [(RULES.get(name), value) for name, value in self.rules.items()]

    def labels(self) -> list[str]:
        """``["rank-one=1", "whole-layers", ...]``: how a user would write this set."""
        return [rule.label(value) for rule, value in self.active()]

    def describe(self) -> str:
        return ", ".join(self.labels()) if self.rules else "no rules"

    def without(self, name: str) -> RuleSet:
        """This set with rule ``name`` switched off."""
        RULES.get(name)
        return RuleSet(rules={k: v for k, v in self.rules.items() if k != name})

    def only(self, name: str) -> RuleSet:
        """Rule ``name`` alone, with this set's value."""
        return RuleSet(rules={name: self.rules[name]} if name in self.rules else {})

    def allows(self, spec: ModelSpec, gamma: DecompositionConfig) -> Verdict:
        """Judge γ before measuring it: ``(True, "")`` or ``(False, why)``.

        Raises:
            InvalidConfigError: γ is not valid for ``spec`` at all.
        """
        pairs = gamma.validate_for(spec)
        if not pairs:
            return Verdict(True, "")
        layers = sorted({p.layer for p in pairs})
        names = gamma.tensor_names(spec)
        ranks = sorted({p.rank for p in pairs})
        for rule, value in self.active():
            label = rule.label(value)
            for layer in layers:
                if not rule.layer_allowed(spec, layer, value):
                    return Verdict(False, f"{label}: layer {layer} may not be decomposed "
                                          f"({rule.summary})")
            gap = rule.min_gap(value)
            for low, high in itertools.pairwise(layers):
                if high - low < gap:
                    return Verdict(False, f"{label}: layers {low} and {high} are {high - low} "
                                          f"apart, at least {gap} required")
            if not rule.tensors_allowed(spec, names, value):
                return Verdict(False, f"{label}: tensors {','.join(names)} are not allowed "
                                      f"({rule.summary})")
            for rank in ranks:
                if not rule.rank_allowed(rank, value):
                    return Verdict(False, f"{label}: rank {rank} is not allowed ({rule.summary})")
        return Verdict(True, "")


# ---- the pruned space, for the study's encoding and for counting ------------------------


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
