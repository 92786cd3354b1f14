"""The sweeps' configurations on SmolLM2-135M's shape (no model is loaded)."""

from __future__ import annotations

import pytest

from dse.characterize_sweeps import SWEEP_NAMES, paper_ranks, sweep_points, table_iv_layer_sets
from dse.study.encoding import FullEncoding, build_search_space, paper_configs
from space.errors import UnknownNameError
from space.metrics import parameter_report
from space.presets import load_spec

SMOL = load_spec("smollm2-135m")


def test_layer_sweep_decomposes_each_layer_alone() -> None:
    points = sweep_points(SMOL, "layers")
    assert [p.gamma.layers for p in points] == [(i,) for i in range(30)]
    assert {p.gamma.rank for p in points} == {1}
    assert all(p.gamma.tensor_names(SMOL) == SMOL.tensor_names for p in points)


def test_tensor_sweep_is_one_type_in_every_layer() -> None:
    points = sweep_points(SMOL, "tensors")
    assert [p.gamma.tensor_names(SMOL) for p in points] == [(t,) for t in SMOL.tensor_names]
    assert all(p.gamma.layers == tuple(range(30)) for p in points)


def test_distance_sweep_is_five_layers_from_layer_2() -> None:
    points = sweep_points(SMOL, "distance")
    assert [p.gamma.layers for p in points] == [tuple(2 + k * d for k in range(5)) for d in range(1, 7)]


def test_case_study_is_the_engines_table_iv_scaling() -> None:
    """The same scaling as the studies' seeds: the engine's paper_configs, rules off."""
    rules = {"rank-one": False, "skip-early": False, "min-distance": False, "whole-layers": False}
    taken, _ = paper_configs(FullEncoding(build_search_space(SMOL, rules)), limit=10)
    assert [layers for _, layers in table_iv_layer_sets(SMOL)] == [c.gamma.layers for c in taken]
    points = sweep_points(SMOL, "case-study")
    assert points[1].gamma.layers == (2, 16, 29)  # the paper's {3, 18, 32}, 1-based, on 30 layers
    assert points[-1].gamma.layers == tuple(range(30))  # 96 %: every layer
    reductions = [p.x for p in points]
    assert reductions == sorted(reductions) and len(points) == len(set(reductions))


def test_rank_sweep_scales_the_papers_ranks() -> None:
    assert [r for _, r in paper_ranks(SMOL)] == [1, 35, 70, 48, 96, 144]  # 250/4096·576, 500/4096·576, ¼·½·¾ of 192
    points = sweep_points(SMOL, "rank")
    assert len(points) == 12 and {p.gamma.layers for p in points} == {(2, 27), (2, 16, 29)}


def test_groups_pair_one_type_everywhere_with_equal_reduction_in_few_layers() -> None:
    points = sweep_points(SMOL, "groups")
    many = [p for p in points if p.series == "one tensor type in all layers"]
    few = [p for p in points if p.series == "all tensors in few layers"]
    assert len(many) == len(few) == 7
    one_layer = parameter_report(SMOL, few[1].gamma).param_reduction_pct  # k: one layer
    for a, b in zip(many, few, strict=False):
        gap = abs(parameter_report(SMOL, a.gamma).param_reduction_pct
                  - parameter_report(SMOL, b.gamma).param_reduction_pct)
        assert gap <= one_layer / 2 + 1e-9, (a.label, b.label)
    assert few[0].gamma.layers == (2, 16, 29)  # q in 30 layers (7.4 %) ~ all tensors in 3 layers (7.9 %)


def test_every_sweep_has_points_and_unknown_sweeps_name_the_known() -> None:
    assert all(sweep_points(SMOL, name) for name in SWEEP_NAMES)
    with pytest.raises(UnknownNameError, match="layers"):
        sweep_points(SMOL, "layer")
