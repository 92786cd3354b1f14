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

The package splits into the rules (:mod:`space.rules.heuristics`), a set of them
switched on (:mod:`space.rules.ruleset`) and the space they leave
(:mod:`space.rules.pruning`); import from ``space.rules``.
"""

from space.rules.heuristics import RULE_ORDER, RULES, Rule, rule_names
from space.rules.pruning import (
    PrunedSpace,
    RuleEffect,
    allowed_layers,
    allowed_ranks,
    allowed_tensor_sets,
    emptying_rules,
    min_layer_gap,
    pruned_candidates,
    pruned_report,
    pruned_size,
    require_candidates,
)
from space.rules.ruleset import RuleSet, Verdict

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
