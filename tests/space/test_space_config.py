"""γ validity (Def. 2, Def. 3, Prop. 1), canonical form and hash."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from space.config import DecompositionConfig, parse_int_list, parse_tensor_list
from space.errors import InvalidConfigError
from space.spec import ModelSpec

ALL7 = ("q", "k", "v", "o", "gate", "up", "down")


@pytest.fixture
def llama(preset: Callable[[str], ModelSpec]) -> ModelSpec:
    return preset("llama2-7b")


def test_valid_gamma_resolves_every_pair(llama: ModelSpec) -> None:
    pairs = DecompositionConfig(layers=(17, 2), tensors=("k", "q"), rank=8).validate_for(llama)
    assert [(p.layer, p.tensor, p.rank) for p in pairs] == [
        (2, "q", 8), (2, "k", 8), (17, "q", 8), (17, "k", 8)]


@pytest.mark.parametrize(
    ("gamma", "message"),
    [
        (DecompositionConfig(layers=(40,)), r"layer 40 is out of range: .* allowed 0\.\.31"),
        (DecompositionConfig(layers=(32,)), "layer 32 is out of range"),
        (DecompositionConfig(layers=(2,), tensors=("query",)),
         "unknown tensor 'query'.*allowed: q, k"),
        (DecompositionConfig(layers=(2,), rank=4097), r"rank 4097 .* allowed 1\.\.4096"),
        (DecompositionConfig(layers=(2,), tensors=("q",), rank=None, ranks={"2:k": 1}),
         r"missing ranks for 2:q; ranks given for undecomposed pairs 2:k"),
        (DecompositionConfig(layers=(2, 3), tensors=("q",), rank=None, ranks={"2:q": 1}),
         "missing ranks for 3:q"),
    ],
)
def test_invalid_gamma_names_what_is_allowed(llama: ModelSpec, gamma: DecompositionConfig,
                                              message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        gamma.validate_for(llama)


def test_rank_bound_is_per_tensor(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("smollm2-135m")
    DecompositionConfig(layers=(0,), tensors=("q",), rank=576).validate_for(spec)
    with pytest.raises(InvalidConfigError, match=r"allowed 1\.\.192"):
        DecompositionConfig(layers=(0,), tensors=("q", "k"), rank=193).validate_for(spec)


@pytest.mark.parametrize(
    "fields",
    [{"rank": 0}, {"layers": (-1,)}, {"layers": (2, 2)}, {"tensors": ("q", "q")},
     {"tensors": ("all", "q")}, {"rank": None}, {"rank": None, "ranks": {"2:q": 0}},
     {"extra": 1}],
)
def test_malformed_gamma_fields(fields: dict) -> None:
    with pytest.raises(ValidationError):
        DecompositionConfig(**fields)


def test_prop1_exact_coverage_is_checked(llama: ModelSpec) -> None:
    # Prop. 1 as printed, (|DL| − 1)(|DT| − 1) + 1 = 7 ranks for 2 layers × 7 tensors,
    # would pass this PR, which leaves 7 of the 14 decomposed pairs without a rank.
    half = {f"2:{t}": 1 for t in ALL7}
    with pytest.raises(InvalidConfigError, match="missing ranks for 9:q"):
        DecompositionConfig(layers=(2, 9), rank=None, ranks=half).validate_for(llama)
    full = half | {f"9:{t}": 2 for t in ALL7}
    assert len(DecompositionConfig(layers=(2, 9), rank=None, ranks=full).validate_for(llama)) == 14


def test_same_gamma_written_two_ways_hashes_the_same(llama: ModelSpec) -> None:
    one = DecompositionConfig(layers=(17, 2), tensors="all", rank=1)
    two = DecompositionConfig(layers=(2, 17), tensors=tuple(reversed(ALL7)), rank=1)
    three = DecompositionConfig(layers=(2, 17), rank=None,
                                ranks={f"{layer}:{t}": 1 for layer in (2, 17) for t in ALL7})
    assert one.hash(llama) == two.hash(llama) == three.hash(llama)
    assert one.canonical(llama) == {"layers": [2, 17], "tensors": list(ALL7), "rank": 1}
    assert three.canonicalize(llama) == one.canonicalize(llama)
    assert DecompositionConfig(layers=(2, 17), rank=2).hash(llama) != one.hash(llama)
    assert len(one.hash(llama)) == 16


def test_identity(llama: ModelSpec) -> None:
    original = DecompositionConfig()
    assert original.is_identity and original.validate_for(llama) == []
    assert original.describe(llama) == "original"
    assert DecompositionConfig(layers=(2, 17, 29)).describe(llama) == "L[2,17,29] all r=1"
    # runs of four or more layers are written as the ranges --layers parses
    assert DecompositionConfig(layers=(1, 2, 3, 7, 8, 9, 10, 20)).describe(llama) == "L[1,2,3,7-10,20] all r=1"
    assert parse_int_list("1,2,3,7-10,20") == (1, 2, 3, 7, 8, 9, 10, 20)


def test_parse_lists() -> None:
    assert parse_int_list("2,17,31") == (2, 17, 31)
    assert parse_int_list("2-5,9") == (2, 3, 4, 5, 9)
    assert parse_int_list("") == ()
    assert parse_tensor_list("all") == "all"
    assert parse_tensor_list("q, k") == ("q", "k")
    for bad in ("2,,3", "a", "5-2", "1.5"):
        with pytest.raises(InvalidConfigError, match="malformed layers list"):
            parse_int_list(bad)
    with pytest.raises(InvalidConfigError, match="empty tensor list"):
        parse_tensor_list(",")
