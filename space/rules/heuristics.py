"""The heuristic rules themselves: one object per rule, in the :data:`RULES` registry.

A rule restricts γ through up to four hooks (which layers, how far apart, which tensor
sets, which ranks); :mod:`space.rules.ruleset` switches rules on and judges one γ with
them, :mod:`space.rules.pruning` counts every γ they allow with the same hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

from space.registry import Registry
from space.spec import ModelSpec

__all__ = ["Rule", "RULES", "RULE_ORDER", "rule_names"]


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
