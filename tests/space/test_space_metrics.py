"""Parameter reduction (Table IV), compression bounds, and MACs / bytes (Table I)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from space.config import DecompositionConfig
from space.errors import InvalidConfigError
from space.metrics import (
    compression_ratio,
    factored_params,
    max_compressing_rank,
    parameter_report,
    workload_cost,
)
from space.spec import ModelSpec

_EVEN_0_30 = tuple(range(0, 31, 2))
# Table IV, converted to 0-based layer indices (the paper's minus one).
TABLE_IV = [
    ((2, 29), 6.0),
    ((2, 17, 31), 9.0),
    ((2, 8, 14, 20, 26), 15.0),
    ((4, 8, 12, 16, 20, 24, 28), 21.0),
    ((2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 31), 33.0),
    (_EVEN_0_30, 48.0),
    ((1, 3, 5, 7, *range(9, 19), 20, 22, 24, 26, 28, 30), 60.0),
    ((1, 3, 5, 7, *range(9, 30)), 75.1),
    ((0, 2, 4, 6, *range(8, 32)), 84.1),
    (tuple(range(32)), 96.1),
]


@pytest.mark.parametrize(("layers", "reduction"), TABLE_IV)
def test_table4_parameter_reduction(
    preset: Callable[[str], ModelSpec], layers: tuple[int, ...], reduction: float
) -> None:
    spec = preset("llama2-7b")
    report = parameter_report(spec, DecompositionConfig(layers=layers, tensors="all", rank=1))
    assert report.param_reduction_pct == pytest.approx(reduction, abs=0.1)
    assert len(report.per_tensor) == len(layers) * 7
    assert report.params_before == spec.total_params == 6_738_415_616


def test_table4_layer_counts() -> None:
    assert [len(layers) for layers, _ in TABLE_IV] == [2, 3, 5, 7, 11, 16, 20, 25, 28, 32]


def test_per_tensor_entries(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("llama2-7b")
    report = parameter_report(spec, DecompositionConfig(layers=(3,), tensors=("q", "down"), rank=2))
    by_name = {entry.tensor: entry for entry in report.per_tensor}
    q, down = by_name["q"], by_name["down"]
    assert (q.layer, q.H, q.W, q.rank) == (3, 4096, 4096, 2)
    assert q.params_before == 4096 * 4096
    assert q.params_after == 4096 * 2 + 4 + 2 * 4096
    assert q.compression_ratio == pytest.approx(4096 * 4096 / (4096 * 4 + 4))
    assert (down.H, down.W) == (4096, 11008) and down.compresses
    saved = (q.params_before - q.params_after) + (down.params_before - down.params_after)
    assert report.params_after == spec.total_params - saved


def test_original_model_has_no_reduction(preset: Callable[[str], ModelSpec]) -> None:
    report = parameter_report(preset("smollm2-135m"), DecompositionConfig())
    assert report.params_after == report.params_before == 134_515_008
    assert report.param_reduction_pct == 0.0 and report.per_tensor == ()


def test_rank_beyond_compression_is_reported(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("smollm2-135m")
    report = parameter_report(spec, DecompositionConfig(layers=(5,), tensors=("q",), rank=300))
    (entry,) = report.per_tensor
    assert entry.max_compressing_rank == 238
    assert not entry.compresses and entry.compression_ratio < 1
    assert report.params_after > report.params_before and not report.compresses


@pytest.mark.parametrize(("height", "width"), [(1, 1), (1, 7), (2, 2), (3, 5), (16, 16), (33, 64),
                                               (64, 176), (192, 576), (577, 1536)])
def test_max_compressing_rank_is_the_largest_that_compresses(height: int, width: int) -> None:
    brute = max(
        (r for r in range(min(height, width) + 1)
         if r == 0 or factored_params(height, width, r) < height * width),
    )
    assert max_compressing_rank(height, width) == brute


def test_max_compressing_rank_matches_the_closed_form() -> None:
    # PR < (√((H+W)² + 4HW) − (H+W)) / 2 (Section II of the paper).
    for height, width in [(4096, 4096), (11008, 4096), (576, 576), (1536, 576)]:
        bound = (((height + width) ** 2 + 4 * height * width) ** 0.5 - (height + width)) / 2
        rank = max_compressing_rank(height, width)
        assert rank < bound <= rank + 1
    assert compression_ratio(4096, 4096, 1) == pytest.approx(4096 * 4096 / 8193)


def test_max_compressing_rank_rejects_empty_shapes() -> None:
    with pytest.raises(InvalidConfigError):
        max_compressing_rank(0, 5)


def test_table1_llama2_7b(preset: Callable[[str], ModelSpec]) -> None:
    cost = workload_cost(preset("llama2-7b"), DecompositionConfig(), batch=1, seq_len=128,
                         bytes_per_param=2)
    assert cost.macs / 1e9 == pytest.approx(850.0, abs=0.5)
    assert cost.attention_macs == 32 * 2 * 128 * 128 * 4096
    # All 6.74 G parameters in FP16: 13.48 GB (the paper prints 13.4), so 63.1, not 63.4.
    assert cost.weight_bytes / 1e9 == pytest.approx(13.48, abs=0.01)
    assert cost.operational_intensity == pytest.approx(63.1, abs=0.05)
    assert cost.macs == cost.macs_before


def test_table1_bert_base(preset: Callable[[str], ModelSpec]) -> None:
    cost = workload_cost(preset("bert-base"), DecompositionConfig(), batch=1, seq_len=128,
                         bytes_per_param=2)
    assert cost.macs / 1e9 == pytest.approx(11.2, abs=0.1)
    assert cost.weight_bytes / 1e6 == pytest.approx(219.0, abs=0.1)
    assert cost.operational_intensity == pytest.approx(51.1, abs=0.5)


def test_operational_intensity_example(preset: Callable[[str], ModelSpec]) -> None:
    # Section II: five layers at PR 1, rebuilding W before the product: OI 63 → 74.26.
    gamma = DecompositionConfig(layers=(2, 8, 14, 20, 26), rank=1)
    rebuilt = workload_cost(preset("llama2-7b"), gamma, style="reconstruct")
    assert rebuilt.operational_intensity == pytest.approx(74.26, abs=0.1)
    assert rebuilt.reconstruct_macs / rebuilt.macs_before == pytest.approx(0.0012, abs=0.0001)
    # Running the three small products instead removes the work along with the bytes.
    factorized = workload_cost(preset("llama2-7b"), gamma)
    saved_per_token = 5 * (4 * (4096 * 4096 - 8193) + 3 * (4096 * 11008 - 15105))
    assert factorized.macs == factorized.macs_before - saved_per_token * 128
    assert factorized.weight_bytes == rebuilt.weight_bytes


def test_cost_scales_with_batch_and_sequence(preset: Callable[[str], ModelSpec]) -> None:
    spec = preset("tiny-llama")
    one = workload_cost(spec, DecompositionConfig(), batch=1, seq_len=16)
    four = workload_cost(spec, DecompositionConfig(), batch=4, seq_len=32)
    assert four.linear_macs == 8 * one.linear_macs
    assert four.attention_macs == 16 * one.attention_macs
    assert four.weight_bytes == one.weight_bytes


@pytest.mark.parametrize("kwargs", [{"batch": 0}, {"seq_len": 0}, {"bytes_per_param": 0},
                                    {"style": "other"}])
def test_cost_rejects_bad_settings(preset: Callable[[str], ModelSpec], kwargs: dict) -> None:
    with pytest.raises(InvalidConfigError):
        workload_cost(preset("tiny-llama"), DecompositionConfig(), **kwargs)


def test_metrics_validate_gamma(preset: Callable[[str], ModelSpec]) -> None:
    with pytest.raises(InvalidConfigError, match="layer 40 is out of range"):
        parameter_report(preset("llama2-7b"), DecompositionConfig(layers=(40,)))
