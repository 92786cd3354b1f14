"""Theorem 1, the exact count with rank bounds, and brute-force enumeration."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import combinations, pairwise

import pytest

from space.counting import (
    count_layer_sets,
    enumerate_space,
    log2_size,
    size_report,
    space_size,
    tensor_subsets,
    theorem1_size,
)
from space.errors import InvalidConfigError
from space.spec import ModelSpec


@pytest.mark.parametrize(
    ("model", "log2_rounded"),
    [("bert-base", 18), ("bert-large", 30), ("llama2-7b", 39), ("llama2-70b", 87)],
)
def test_table2_log2_sizes(
    preset: Callable[[str], ModelSpec], model: str, log2_rounded: int
) -> None:
    report = size_report(preset(model), rank=1)
    assert round(report.log2_size) == log2_rounded
    assert report.size == report.theorem1


def test_llama2_7b_exact_size(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("llama2-7b")
    assert space_size(spec) == (2**7 - 1) * (2**32 - 1) + 1 == 545_460_846_466
    # Every Llama-2-7B tensor has rank 4096, so Theorem 1 is exact at any R ≤ 4096.
    assert space_size(spec, rank=4096) == theorem1_size(32, 7, 4096)
    assert space_size(spec, rank=4096, fixed=True) == theorem1_size(32, 7, 1)


def test_rank_above_some_tensor_ranks_is_counted_exactly(
    preset: Callable[[str], ModelSpec],
) -> None:
    # SmolLM2's k and v are 192×576 (rank 192); the others have rank 576.
    spec = preset("smollm2-135m")
    layers = 2**30 - 1
    # Sets avoiding k and v: 2^5 − 1 of them take any of 1..300; the rest only 1..192.
    expected = layers * ((2**5 - 1) * 300 + (2**7 - 2**5) * 192) + 1
    assert space_size(spec, rank=300) == expected
    assert space_size(spec, rank=300) < theorem1_size(30, 7, 300)
    # Fixed PR = 300: only the 31 sets without k and v.
    assert space_size(spec, rank=300, fixed=True) == layers * 31 + 1


def test_theorem1_formula() -> None:
    assert theorem1_size(0, 7) == 1
    assert theorem1_size(1, 1, 1) == 2
    assert theorem1_size(3, 2, 5) == 3 * 7 * 5 + 1
    with pytest.raises(InvalidConfigError):
        theorem1_size(-1, 2)


@pytest.mark.parametrize(("rank", "fixed"), [(1, False), (2, False), (3, False), (4, False),
                                             (2, True), (3, True), (4, True)])
def test_formula_matches_enumeration(toy_spec: ModelSpec, rank: int, fixed: bool) -> None:
    configs = list(enumerate_space(toy_spec, rank=rank, fixed=fixed))
    assert len(configs) == space_size(toy_spec, rank=rank, fixed=fixed)
    assert len({c.hash(toy_spec) for c in configs}) == len(configs)  # all distinct
    for config in configs:
        config.validate_for(toy_spec)  # every enumerated γ is valid


def test_enumeration_of_tiny_llama_matches_theorem1(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("tiny-llama")
    assert sum(1 for _ in enumerate_space(spec, rank=1)) == theorem1_size(4, 7, 1) == 1906


def test_enumeration_refuses_large_spaces(preset: Callable[[str], ModelSpec]) -> None:
    with pytest.raises(InvalidConfigError, match="enumeration is limited"):
        next(enumerate_space(preset("llama2-7b")))


@pytest.mark.parametrize("rank", [0, 5])
def test_rank_out_of_range(toy_spec: ModelSpec, rank: int) -> None:
    with pytest.raises(InvalidConfigError, match=r"allowed 1\.\.4"):
        space_size(toy_spec, rank=rank)


@pytest.mark.parametrize("gap", [1, 2, 3, 4])
@pytest.mark.parametrize("layers", [(), (0,), (0, 1, 2, 3, 4, 5, 6, 7), (1, 2, 5, 6, 7, 9, 12)])
def test_layer_sets_dynamic_program(layers: tuple[int, ...], gap: int) -> None:
    brute = sum(
        1
        for size in range(1, len(layers) + 1)
        for chosen in combinations(layers, size)
        if all(b - a >= gap for a, b in pairwise(chosen))
    )
    assert count_layer_sets(layers, gap) == brute


def test_layer_sets_min_distance_two_is_fibonacci() -> None:
    # Subsets of n in-line items without neighbours: F(n + 2), minus the empty set.
    assert count_layer_sets(range(30), 2) == 2_178_309 - 1
    assert count_layer_sets(range(80), 5) > 0  # no 2^80 enumeration needed


def test_tensor_subsets(toy_spec: ModelSpec) -> None:
    subsets = list(tensor_subsets(toy_spec))
    assert len(subsets) == 7
    assert subsets[0] == ("a",) and subsets[-1] == ("a", "b", "c")


def test_log2_size() -> None:
    assert log2_size(0) is None
    assert log2_size(2**200) == 200.0
    assert math.isclose(log2_size(3) or 0.0, math.log2(3))
