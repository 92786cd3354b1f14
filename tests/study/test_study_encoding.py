"""Encodings of γ: the compact ones never yield a γ the rules exclude; seeds; empty spaces."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dse.study.definition import StudyDefinition
from dse.study.encoding import (
    FullEncoding,
    GapsEncoding,
    Param,
    RejectedGamma,
    SpacingEncoding,
    build_search_space,
    check_gamma,
    make_encoding,
    paper_configs,
)
from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.presets import load_spec
from space.rules import RuleSet, pruned_candidates

RULE_SETS: list[dict[str, Any]] = [
    {"rank-one": True, "whole-layers": True, "skip-early": 2, "min-distance": 2},  # the paper's
    {"skip-early": 3, "skip-late": 2, "min-distance": 3},
    {"min-distance": 4, "whole-layers": True},
    {"rank-one": 4, "skip-early": 1},
    {},
]


def _space(model: str, rules: dict[str, Any], **search: Any):  # type: ignore[no-untyped-def]
    definition = StudyDefinition(model=model, rules=rules, search=search)
    bounds = definition.search
    return build_search_space(load_spec(model), definition.rules, min_layers=bounds.min_layers,
                              max_layers=bounds.max_layers, max_rank=bounds.max_rank)


def _params(draw: st.DrawFn, params: list[Param]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in params:
        if p.kind == "int":
            out[p.name] = draw(st.integers(int(p.low), int(p.high)))
        elif p.kind == "float":
            out[p.name] = draw(st.floats(p.low, p.high, allow_nan=False))
        else:
            out[p.name] = draw(st.sampled_from(p.choices))
    return out


SPACES = {
    (model, i, encoding): None
    for model in ("smollm2-135m", "llama2-7b", "tiny-llama")
    for i in range(len(RULE_SETS))
    for encoding in ("gaps", "spacing")
    if not (model == "tiny-llama" and i == 1)  # those rules empty tiny-llama's space
}


@st.composite
def _case(draw: st.DrawFn) -> tuple[Any, DecompositionConfig]:
    model, index, name = draw(st.sampled_from(sorted(SPACES)))
    space = _space(model, RULE_SETS[index], max_layers=draw(st.sampled_from([None, 3])))
    encoding = make_encoding(name, space)
    return space, encoding.decode(_params(draw, encoding.params()))


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_case())
def test_compact_encodings_never_yield_a_rule_violating_gamma(case: tuple[Any, DecompositionConfig]) -> None:
    space, gamma = case
    assert space.rules.allows(space.spec, gamma).allowed
    assert check_gamma(space, gamma) is None
    assert space.min_layers <= len(gamma.layers) <= space.max_layers


def _all_layer_sets(space) -> set[tuple[int, ...]]:  # type: ignore[no-untyped-def]
    found = set()
    for n in range(space.min_layers, space.max_layers + 1):
        for combo in itertools.combinations(space.layers, n):
            if all(b - a >= space.min_gap for a, b in itertools.pairwise(combo)):
                found.add(combo)
    return found


def test_gaps_encoding_reaches_every_allowed_layer_set_exactly() -> None:
    space = _space("tiny-llama", {"skip-early": 1, "min-distance": 1, "whole-layers": True, "rank-one": True})
    encoding = GapsEncoding(space)
    wanted = _all_layer_sets(space)
    assert len(wanted) == pruned_candidates(space.spec, space.rules) == 7
    for layers in wanted:
        gamma = DecompositionConfig(layers=layers, tensors="all", rank=1)
        params = encoding.encode(gamma)
        assert params is not None and encoding.decode(params) == gamma


def test_gaps_round_trip_on_smollm2_table_iv_shapes() -> None:
    space = _space("smollm2-135m", RULE_SETS[0])
    encoding = GapsEncoding(space)
    for layers in [(2, 27), (2, 16, 29), (2, 7, 13, 19, 24), (2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 29)]:
        gamma = DecompositionConfig(layers=layers, tensors="all", rank=1)
        assert encoding.decode(encoding.encode(gamma)) == gamma  # type: ignore[arg-type]


def test_spacing_encoding_holds_only_evenly_spaced_sets() -> None:
    space = _space("smollm2-135m", RULE_SETS[0])
    encoding = SpacingEncoding(space)
    even = DecompositionConfig(layers=(2, 8, 14, 20), tensors="all", rank=1)
    assert encoding.decode(encoding.encode(even)) == even  # type: ignore[arg-type]
    assert encoding.encode(DecompositionConfig(layers=(2, 16, 29), tensors="all", rank=1)) is None


def test_full_encoding_covers_theorem_1_and_leaves_rules_to_the_check() -> None:
    space = _space("tiny-llama", {"skip-early": 1})
    encoding = FullEncoding(space)
    names = [p.name for p in encoding.params()]
    assert names[:4] == ["layer_0", "layer_1", "layer_2", "layer_3"]
    assert "tensor_q" in names and "rank" in names
    params = {p.name: False for p in encoding.params() if p.kind == "categorical"} | {"rank": 1}
    params |= {"layer_0": True, "tensor_q": True}
    gamma = encoding.decode(params)
    assert gamma.layers == (0,) and gamma.tensors == ("q",)
    assert "skip-early" in (check_gamma(space, gamma) or "")
    params["tensor_q"] = False
    with pytest.raises(RejectedGamma, match="no tensor"):
        encoding.decode(params)
    assert encoding.decode(encoding.encode(DecompositionConfig(layers=(1, 3), tensors=("q", "v"), rank=3))) == \
        DecompositionConfig(layers=(1, 3), tensors=("q", "v"), rank=3)  # type: ignore[arg-type]


def test_rank_is_a_parameter_only_without_rank_one() -> None:
    with_rule = _space("smollm2-135m", RULE_SETS[0])
    assert with_rule.ranks == (1,)
    assert "rank" not in [p.name for p in GapsEncoding(with_rule).params()]
    without = _space("smollm2-135m", {"whole-layers": True}, max_rank=64)
    assert without.ranks == tuple(range(1, 65))
    rank_param = next(p for p in GapsEncoding(without).params() if p.name == "rank")
    assert (rank_param.low, rank_param.high, rank_param.log) == (1, 64, True)


def test_paper_seeds_scale_table_iv_to_the_depth() -> None:
    space = _space("llama2-7b", RULE_SETS[0])
    taken, skipped = paper_configs(GapsEncoding(space), limit=3)
    # On 32 layers the scaling is the identity: Table IV minus one.
    assert [c.gamma.layers for c in taken] == [(2, 29), (2, 17, 31), (2, 8, 14, 20, 26)]
    assert skipped == []
    smol = _space("smollm2-135m", RULE_SETS[0])
    taken, _ = paper_configs(GapsEncoding(smol), limit=2)
    assert [c.gamma.layers for c in taken] == [(2, 27), (2, 16, 29)]
    assert all(c.label.startswith("Table IV") for c in taken)


def test_paper_seeds_that_the_rules_exclude_are_skipped_with_the_reason() -> None:
    space = _space("tiny-llama", {"skip-early": 1, "min-distance": 2, "whole-layers": True, "rank-one": True})
    taken, skipped = paper_configs(GapsEncoding(space), limit=6)
    assert [c.gamma.layers for c in taken] == [(1, 3)]
    assert any("min-distance=2" in line for line in skipped)


@pytest.mark.parametrize(
    ("rules", "search", "named"),
    [
        ({"skip-early": 30}, {}, "skip-early=30"),
        ({"skip-early": 20, "skip-late": 10}, {}, "skip-"),
        ({"min-distance": 20, "skip-early": 2}, {"min_layers": 3}, "min-distance=20"),
    ],
)
def test_rules_that_leave_nothing_name_the_rule(rules: dict[str, Any], search: dict[str, Any], named: str) -> None:
    with pytest.raises(InvalidConfigError, match=named):
        _space("smollm2-135m", rules, **search)


def test_max_rank_above_a_tensor_rank_is_refused() -> None:
    with pytest.raises(InvalidConfigError, match="max_rank 1000 is above the smallest tensor rank"):
        _space("smollm2-135m", {}, max_rank=1000)


def test_rule_set_of_a_definition_is_the_rules_module_s() -> None:
    space = _space("smollm2-135m", {"rank-one": True, "skip-early": False, "min-distance": 3})
    assert space.rules == RuleSet(rules={"rank-one": 1, "min-distance": 3})
    assert space.layers == tuple(range(30)) and space.min_gap == 3
