"""Heuristic rules: parsing, judging one γ, and exact pruned counts against brute force."""

from __future__ import annotations

from collections.abc import Callable
from itertools import product

import pytest
from pydantic import ValidationError

from space.config import DecompositionConfig
from space.counting import enumerate_space, space_size
from space.errors import InvalidConfigError, UnknownNameError
from space.rules import (
    RULE_ORDER,
    RULES,
    RuleSet,
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
from space.spec import ModelSpec

# Parameter profiles; every on/off combination of the five rules is tried with each.
PROFILES = [
    {"rank-one": 1, "whole-layers": None, "skip-early": 2, "skip-late": 0, "min-distance": 2},
    {"rank-one": 2, "whole-layers": None, "skip-early": 1, "skip-late": 2, "min-distance": 3},
    {"rank-one": 3, "whole-layers": None, "skip-early": 0, "skip-late": 1, "min-distance": 1},
    {"rank-one": 4, "whole-layers": None, "skip-early": 3, "skip-late": 3, "min-distance": 4},
]
SPACES = [(3, False), (2, True), (4, True)]
ALL7 = ("q", "k", "v", "o", "gate", "up", "down")


def _rule_sets() -> list[RuleSet]:
    sets = []
    for profile in PROFILES:
        for switches in product((False, True), repeat=len(RULE_ORDER)):
            chosen = {name: profile[name] for name, on in zip(RULE_ORDER, switches, strict=True) if on}
            sets.append(RuleSet(rules=chosen))
    return sets


@pytest.fixture(scope="module")
def enumerated(toy_spec: ModelSpec) -> dict[tuple[int, bool], list[DecompositionConfig]]:
    return {(rank, fixed): list(enumerate_space(toy_spec, rank=rank, fixed=fixed))
            for rank, fixed in SPACES}


@pytest.mark.parametrize(("rank", "fixed"), SPACES)
def test_pruned_count_matches_brute_force_for_every_combination(
    toy_spec: ModelSpec,
    enumerated: dict[tuple[int, bool], list[DecompositionConfig]],
    rank: int,
    fixed: bool,
) -> None:
    configs = enumerated[(rank, fixed)]
    checked = 0
    for rules in _rule_sets():
        brute = sum(1 for gamma in configs if rules.allows(toy_spec, gamma).allowed)
        assert pruned_size(toy_spec, rules, rank=rank, fixed=fixed) == brute, rules.describe()
        checked += 1
    assert checked == len(PROFILES) * 2 ** len(RULE_ORDER)


def test_no_rule_is_the_full_space(toy_spec: ModelSpec) -> None:
    assert pruned_size(toy_spec, RuleSet.off(), rank=3) == space_size(toy_spec, rank=3)


def test_llama2_7b_paper_rules(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("llama2-7b")
    # Rank 1, whole layers, layers 2..31 with no two adjacent: F(32) − 1 layer sets.
    report = pruned_report(spec, RuleSet.defaults())
    assert report.pruned_size == 2_178_309 and report.pruned_candidates == 2_178_308
    assert report.size == 545_460_846_466
    effects = {effect.rule: effect for effect in report.effects}
    assert effects["whole-layers"].alone_size == 2**32  # 2^32 − 1 layer sets, one tensor set, +1
    assert effects["skip-early"].alone_size == (2**30 - 1) * 127 + 1
    assert effects["skip-late"].alone_size == report.size  # K = 0 removes nothing
    assert effects["min-distance"].without_size == 2**30
    assert report.empty_rules == []


def test_paper_case_study_configs_pass_the_rules(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("llama2-7b")
    rules = RuleSet.defaults()
    assert rules.allows(spec, DecompositionConfig(layers=(2, 17, 31))).allowed
    assert rules.allows(spec, DecompositionConfig(layers=(2, 8, 14, 20, 26))).allowed
    assert rules.allows(spec, DecompositionConfig()) == (True, "")


@pytest.mark.parametrize(
    ("gamma", "rule"),
    [
        (DecompositionConfig(layers=(1, 10)), "skip-early=2"),
        (DecompositionConfig(layers=(10, 11)), "min-distance=2"),
        (DecompositionConfig(layers=(10,), tensors=("q", "k")), "whole-layers"),
        (DecompositionConfig(layers=(10,), rank=4), "rank-one=1"),
        (DecompositionConfig(layers=(10,), rank=None, ranks={f"10:{t}": 2 if t == "up" else 1
                                                             for t in ALL7}),
         "rank-one=1"),
    ],
)
def test_allows_names_the_rejecting_rule(
    preset: Callable[[str], ModelSpec], gamma: DecompositionConfig, rule: str
) -> None:
    allowed, reason = RuleSet.defaults().allows(preset("llama2-7b"), gamma)
    assert not allowed
    assert reason.startswith(rule + ":")


def test_skip_late_counts_from_the_end(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("llama2-7b")
    rules = RuleSet.parse(["skip-late=3"], start=RuleSet.off())
    assert allowed_layers(spec, rules) == tuple(range(29))
    verdict = rules.allows(spec, DecompositionConfig(layers=(29,)))
    assert not verdict.allowed and "layer 29" in verdict.reason


def test_allows_rejects_invalid_gamma(preset: Callable[[str], ModelSpec]) -> None:
    with pytest.raises(InvalidConfigError, match="layer 40"):
        RuleSet.defaults().allows(preset("llama2-7b"), DecompositionConfig(layers=(40,)))


def test_helpers_for_the_study_encoding(toy_spec: ModelSpec) -> None:
    rules = RuleSet.parse(["skip-early=1", "skip-late=1", "min-distance=3", "rank-one=2",
                           "whole-layers=off"])
    assert allowed_layers(toy_spec, rules) == (1, 2, 3, 4)
    assert min_layer_gap(rules) == 3
    assert min_layer_gap(RuleSet.off()) == 1
    assert len(allowed_tensor_sets(toy_spec, rules)) == 7
    assert allowed_tensor_sets(toy_spec, RuleSet.parse(["whole-layers"])) == [("a", "b", "c")]
    assert allowed_ranks(toy_spec, rules, rank=4) == [2]
    assert allowed_ranks(toy_spec, RuleSet.off(), rank=3) == [1, 2, 3]
    # Layer sets from 1..4 at distance ≥ 3: {1},{2},{3},{4},{1,4}; tensor sets × rank 2:
    # all 7 sets admit rank 2 (tensor ranks 2, 3, 4).
    assert pruned_candidates(toy_spec, rules, rank=4) == 5 * 7


def test_parse_and_defaults() -> None:
    defaults = RuleSet.defaults()
    assert defaults.labels() == ["rank-one=1", "whole-layers", "skip-early=2", "skip-late=0",
                                 "min-distance=2"]
    changed = RuleSet.parse(["skip-early=3", "min-distance=off", "whole-layers=off"])
    assert changed.labels() == ["rank-one=1", "skip-early=3", "skip-late=0"]
    only = RuleSet.parse(["min-distance"], start=RuleSet.off())
    assert only.rules == {"min-distance": 2}
    assert RuleSet.parse(["min-distance=on"], start=RuleSet.off()) == only
    assert RuleSet.off().describe() == "no rules"
    assert not changed.is_on("min-distance") and changed.value("skip-early") == 3


def test_short_forms_a_study_file_may_use() -> None:
    assert RuleSet(rules=["skip-early=4", "whole-layers"]).rules == {"whole-layers": None,
                                                                     "skip-early": 4}
    assert RuleSet.model_validate(["rank-one"]).rules == {"rank-one": 1}
    assert RuleSet(rules={"whole-layers": True, "rank-one": False, "skip-late": 1}).labels() == [
        "whole-layers", "skip-late=1"]
    assert RuleSet(rules={"skip-early": None}).rules == {"skip-early": 2}
    again = RuleSet.model_validate_json(RuleSet.defaults().model_dump_json())
    assert again == RuleSet.defaults()


@pytest.mark.parametrize(
    ("item", "error", "message"),
    [
        ("skip-erly=3", UnknownNameError, "Did you mean 'skip-early'"),
        ("skip-early=x", InvalidConfigError, "bad value 'x' for rule skip-early"),
        ("skip-early=-1", InvalidConfigError, "must be ≥ 0"),
        ("min-distance=0", InvalidConfigError, "must be ≥ 1"),
        ("rank-one=0", InvalidConfigError, "must be ≥ 1"),
        ("whole-layers=3", InvalidConfigError, "takes no value"),
        ("=2", InvalidConfigError, "malformed rule"),
    ],
)
def test_parse_errors(item: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RuleSet.parse([item])


def test_model_validation_errors() -> None:
    with pytest.raises((UnknownNameError, ValidationError), match="unknown rule 'nope'"):
        RuleSet(rules={"nope": 1})
    with pytest.raises(ValidationError, match="takes no value"):
        RuleSet(rules={"whole-layers": 2})


def test_empty_space_names_the_rule(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("llama2-7b")
    both = RuleSet.parse(["skip-early=20", "skip-late=20"])
    assert pruned_size(spec, both) == 1 and pruned_candidates(spec, both) == 0
    assert emptying_rules(spec, both) == ["skip-early=20", "skip-late=20"]
    with pytest.raises(InvalidConfigError, match="skip-early=20 with skip-late=20"):
        require_candidates(spec, both)
    too_early = RuleSet.parse(["skip-early=32"])
    assert emptying_rules(spec, too_early) == ["skip-early=32"]
    # rank-one pins PR = 1, but the space was asked for PR = 5 only.
    assert emptying_rules(spec, RuleSet.defaults(), rank=5, fixed=True) == ["rank-one=1"]
    with pytest.raises(InvalidConfigError, match="rank-one=1"):
        require_candidates(spec, RuleSet.defaults(), rank=5, fixed=True)
    assert require_candidates(spec, RuleSet.defaults()) == 2_178_308


def test_empty_space_by_rank_and_whole_layers(preset: Callable[[str], ModelSpec]) -> None:
    # SmolLM2's k and v have rank 192: PR = 300 needs sets without them, whole-layers forbids that.
    spec = preset("smollm2-135m")
    rules = RuleSet(rules={"rank-one": 300, "whole-layers": None})
    assert pruned_candidates(spec, rules, rank=300) == 0
    assert emptying_rules(spec, rules, rank=300) == ["rank-one=300", "whole-layers"]
    assert pruned_candidates(spec, rules.without("whole-layers"), rank=300) == (2**30 - 1) * 31


def test_registry_lists_every_rule() -> None:
    assert set(RULES.names()) == set(RULE_ORDER)
    for name in RULE_ORDER:
        rule = RULES.get(name)
        assert rule.name == name and rule.summary


@pytest.mark.parametrize("name", RULES.names())
class TestRuleConformance:
    """What every registered rule must satisfy, so a new rule gets exact counts for free."""

    def test_default_is_allowed_and_round_trips(self, name: str) -> None:
        rule = RULES.get(name)
        if rule.param is not None:
            assert rule.default is not None and rule.default >= rule.minimum
        rules = RuleSet.parse([name], start=RuleSet.off())
        assert rules.labels() == [rule.label(rule.default)]
        assert RuleSet.parse(rules.labels(), start=RuleSet.off()) == rules

    def test_alone_count_matches_its_judgement(
        self, name: str, toy_spec: ModelSpec,
        enumerated: dict[tuple[int, bool], list[DecompositionConfig]],
    ) -> None:
        rules = RuleSet.parse([name], start=RuleSet.off())
        configs = enumerated[(3, False)]
        allowed = sum(1 for gamma in configs if rules.allows(toy_spec, gamma).allowed)
        assert pruned_size(toy_spec, rules, rank=3) == allowed
        assert allowed <= len(configs)

    def test_rejections_name_the_rule(
        self, name: str, toy_spec: ModelSpec,
        enumerated: dict[tuple[int, bool], list[DecompositionConfig]],
    ) -> None:
        rules = RuleSet.parse([name], start=RuleSet.off())
        label = rules.labels()[0]
        reasons = {rules.allows(toy_spec, gamma).reason for gamma in enumerated[(3, False)]}
        assert all(reason == "" or reason.startswith(label + ":") for reason in reasons)
