"""Table IV scaled to another depth: the one function the study's seeds and the latency benchmark use."""

from __future__ import annotations

import pytest

from space.errors import InvalidConfigError
from space.paper import PAPER_DEPTH, PAPER_TABLE_IV, scale_paper_layers


def test_the_paper_depth_is_a_shift_to_0_based() -> None:
    for _, layers in PAPER_TABLE_IV:
        assert scale_paper_layers(layers, PAPER_DEPTH) == tuple(sorted(layer - 1 for layer in layers))


def test_smollm2_rows_as_the_benchmark_times_them() -> None:
    rows = [scale_paper_layers(layers, 30, low=2) for _, layers in PAPER_TABLE_IV[:4]]
    # The same layers as docs/performance.md lists (round((l-1)·29/31), at least 2).
    assert rows == [(2, 27), (2, 16, 29), (2, 7, 13, 19, 24), (4, 7, 11, 15, 19, 22, 26)]


def test_small_models_clamp_and_merge() -> None:
    # Layer 3 of 32 lands on layer 0 of 4; with layers 0-1 excluded it moves to 2, and 30, 32 merge at 3.
    assert scale_paper_layers((3, 30, 32), 4) == (0, 3)
    assert scale_paper_layers((3, 30, 32), 4, low=2) == (2, 3)
    assert scale_paper_layers((3, 30, 32), 4, low=1, high=2) == (1, 2)


@pytest.mark.parametrize(("low", "high"), [(-1, None), (3, 2), (0, 4)])
def test_a_range_outside_the_model_is_refused(low: int, high: int | None) -> None:
    with pytest.raises(InvalidConfigError, match=r"is not within 0\.\.3"):
        scale_paper_layers((3,), 4, low=low, high=high)
