"""FactorizedLinear: same outputs as the dense layer, the paper's parameter count, no W rebuilt."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dse.decompose import TuckerFactors, decompose
from dse.layers import FactorizedLinear
from space.errors import InvalidConfigError


def _linear(in_features: int, out_features: int, *, bias: bool = True,
            dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias, dtype=dtype)


def _inputs(tokens: int, width: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(2, tokens, width, generator=torch.Generator().manual_seed(1), dtype=dtype)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])  # (in, out): both sides are the smaller
@pytest.mark.parametrize("tokens", [3, 50])  # the chained order, and Γ folded on the fly
def test_full_rank_output_equals_the_dense_layer(bias: bool, shape: tuple[int, int],
                                                 tokens: int) -> None:
    linear = _linear(*shape, bias=bias)
    layer = FactorizedLinear.from_linear(linear, decompose(linear.weight, min(shape)))
    x = _inputs(tokens, shape[0])
    expected = x @ linear.weight.T + (linear.bias if bias else 0)
    assert torch.allclose(layer(x), expected, atol=1e-10)
    assert torch.allclose(layer(x), linear(x), atol=1e-10)


@pytest.mark.parametrize("tokens", [1, 100])
def test_low_rank_output_is_x_times_the_factored_weight(tokens: int) -> None:
    linear = _linear(32, 48)
    factors = decompose(linear.weight, 5)
    layer = FactorizedLinear.from_linear(linear, factors)
    x = _inputs(tokens, 32)
    expected = x @ factors.reconstruct().T + linear.bias
    assert torch.allclose(layer(x), expected, atol=1e-10)
    assert torch.allclose(layer.dense_weight(), factors.reconstruct(), atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rank", [1, 7, 24])
def test_parameter_count_is_the_papers_formula(bias: bool, rank: int) -> None:
    height, width = 40, 24
    linear = _linear(width, height, bias=bias)
    layer = FactorizedLinear.from_linear(linear, decompose(linear.weight, rank))
    expected = height * rank + rank * rank + rank * width + (height if bias else 0)
    assert sum(p.numel() for p in layer.parameters()) == expected
    folded = FactorizedLinear.from_linear(linear, decompose(linear.weight, rank), fold=True)
    assert sum(p.numel() for p in folded.parameters()) == expected - rank * rank
    assert (layer.in_features, layer.out_features, layer.rank) == (width, height, rank)
    assert (folded.in_features, folded.out_features, folded.rank) == (width, height, rank)


@pytest.mark.parametrize("tokens", [1, 60])
def test_fold_gives_the_same_output(tokens: int) -> None:
    linear = _linear(36, 28)
    factors = decompose(linear.weight, 6)
    plain = FactorizedLinear.from_linear(linear, factors)
    folded = FactorizedLinear.from_linear(linear, factors, fold=True)
    assert folded.core is None and folded.folded
    x = _inputs(tokens, 36)
    assert torch.allclose(plain(x), folded(x), atol=1e-10)
    assert torch.allclose(plain.dense_weight(), folded.dense_weight(), atol=1e-12)


def test_forward_never_rebuilds_the_weight() -> None:
    height, width, rank, tokens = 300, 200, 4, 1
    linear = _linear(width, height, bias=False, dtype=torch.float32)
    layer = FactorizedLinear.from_linear(linear, decompose(linear.weight, rank))
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(tokens, width))
    # Three chained products: 2·n·(W·r + r² + r·H); rebuilding W alone would cost 2·H·W·r.
    assert counter.get_total_flops() == 2 * tokens * (width * rank + rank * rank + rank * height)


def test_large_batches_fold_the_core_into_the_smaller_side_first() -> None:
    height, width, rank, tokens = 30, 20, 4, 500
    linear = _linear(width, height, bias=False, dtype=torch.float32)
    layer = FactorizedLinear.from_linear(linear, decompose(linear.weight, rank))
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(tokens, width))
    assert counter.get_total_flops() == 2 * (width * rank * rank + tokens * (width + height) * rank)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_dtype_is_kept(dtype: torch.dtype) -> None:
    linear = _linear(16, 12, dtype=dtype)
    layer = FactorizedLinear.from_linear(linear, decompose(linear.weight.float(), 4))
    assert {p.dtype for p in layer.parameters()} == {dtype}
    x = _inputs(3, 16, dtype)
    assert layer(x).dtype == dtype
    assert not torch.isnan(layer(x)).any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_device_is_kept() -> None:
    linear = _linear(16, 12, dtype=torch.float32).cuda()
    layer = FactorizedLinear.from_linear(linear, decompose(linear.weight.cpu(), 16))
    assert {p.device.type for p in layer.parameters()} == {"cuda"}
    x = _inputs(3, 16, torch.float32).cuda()
    assert torch.allclose(layer(x), linear(x), atol=1e-4)


def test_factors_and_bias_are_copied_not_shared() -> None:
    linear = _linear(10, 8)
    factors = decompose(linear.weight, 3)
    layer = FactorizedLinear.from_linear(linear, factors)
    with torch.no_grad():
        layer.u1.zero_()
        layer.bias.zero_()
    assert factors.u1.abs().sum() > 0
    assert linear.bias.abs().sum() > 0


def test_requires_grad_follows_the_original_weight() -> None:
    linear = _linear(10, 8)
    linear.requires_grad_(False)
    layer = FactorizedLinear.from_linear(linear, decompose(linear.weight, 3))
    assert not any(p.requires_grad for p in layer.parameters())


def test_factors_of_another_shape_are_rejected() -> None:
    linear = _linear(10, 8)
    with pytest.raises(InvalidConfigError, match=r"factors for a 10×8 weight cannot replace"):
        FactorizedLinear.from_linear(linear, decompose(torch.randn(10, 8), 2))


def test_inconsistent_factors_are_rejected() -> None:
    u1, core, u2 = torch.randn(8, 3), torch.randn(3, 3), torch.randn(10, 3)
    with pytest.raises(InvalidConfigError, match="factor shapes disagree"):
        FactorizedLinear(u1, torch.randn(2, 2), u2)
    with pytest.raises(InvalidConfigError, match="one dtype and device"):
        FactorizedLinear(u1, core.double(), u2)
    with pytest.raises(InvalidConfigError, match="bias must have H = 8"):
        FactorizedLinear(u1, core, u2, torch.randn(10))
    layer = FactorizedLinear(*TuckerFactors(u1, core, u2), torch.zeros(8))
    assert "rank=3" in repr(layer) and "fold=False" in repr(layer)
