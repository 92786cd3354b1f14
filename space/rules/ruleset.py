"""A :class:`RuleSet`: which rules are on, with what value, and whether they allow a γ.

Parses the CLI's ``NAME[=VALUE]`` strings and a study file's mapping, and judges one γ
through the rules' hooks (:meth:`RuleSet.allows`), naming the rule that rejects it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, model_validator

from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.rules.heuristics import RULE_ORDER, RULES, Rule, rule_names
from space.spec import ModelSpec

__all__ = ["RuleSet", "Verdict"]


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
