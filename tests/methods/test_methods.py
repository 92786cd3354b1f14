"""The defining properties of the calibrated and run-time methods, on random data."""

from __future__ import annotations

import pytest
import torch

from dse.calibration import InputStats
from dse.decompose import decompose, truncated_svd
from dse.methods import two_factors
from dse.methods.activation import ActivationLowRankLinear
from dse.methods.asvd import asvd_scale
from dse.methods.whitening import cholesky_with_jitter
from space.errors import CalibrationError

HEIGHT, WIDTH, TOKENS = 24, 40, 300


def stats_of(x: torch.Tensor) -> InputStats:
    x = x.double()
    return InputStats(x.T @ x, x.abs().mean(0), x.sum(0), int(x.shape[0]))


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(HEIGHT, WIDTH, generator=generator, dtype=torch.float64)
    # Correlated inputs with very different channel scales, like LLM activations.
    mixing = torch.randn(WIDTH, WIDTH, generator=generator, dtype=torch.float64)
    scales = torch.logspace(-2, 1, WIDTH, dtype=torch.float64)
    x = torch.randn(TOKENS, WIDTH, generator=generator, dtype=torch.float64) @ mixing * scales
    return weight, x


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_whitening_error_equals_the_discarded_singular_values(data, rank: int) -> None:  # type: ignore[no-untyped-def]
    weight, x = data
    stats = stats_of(x)
    two = two_factors(weight, rank, "svd-llm", stats)
    approx = two.a @ two.b.T
    output_error = float(torch.linalg.matrix_norm((weight - approx) @ x.T) ** 2)
    chol, jitter = cholesky_with_jitter(stats.gram)  # type: ignore[misc]
    assert jitter == 0.0
    sigma = torch.linalg.svdvals(weight @ chol)
    discarded = float((sigma[rank:] ** 2).sum())
    assert output_error == pytest.approx(discarded, rel=1e-9)
    # ... and it beats plain SVD in output space, which is the point of the method.
    plain = decompose(weight, rank).reconstruct()
    assert output_error < float(torch.linalg.matrix_norm((weight - plain) @ x.T) ** 2)


def test_asvd_scaling_is_undone_exactly(data) -> None:  # type: ignore[no-untyped-def]
    weight, x = data
    stats = stats_of(x)
    scale = asvd_scale(stats, 0.5)
    assert torch.allclose(scale, x.abs().mean(0) ** 0.5)
    two = two_factors(weight, 9, "asvd", stats, alpha=0.5)
    triplets = truncated_svd(weight * scale, 9)
    # b = S⁻¹ V_k: multiplying S back gives the right singular vectors of W·S.
    assert torch.allclose(two.b * scale[:, None], triplets.v, atol=1e-12)
    assert torch.allclose(two.a, triplets.u * triplets.s, atol=1e-12)
    full = two_factors(weight, min(HEIGHT, WIDTH), "asvd", stats, alpha=0.5)
    assert torch.allclose(full.a @ full.b.T, weight, atol=1e-10)


def test_feature_projector_is_idempotent(data) -> None:  # type: ignore[no-untyped-def]
    weight, x = data
    two = two_factors(weight, 6, "feature", stats_of(x))
    projector = two.a @ two.a.T
    assert torch.allclose(projector @ projector, projector, atol=1e-12)
    assert torch.allclose(two.a @ two.b.T, projector @ weight, atol=1e-12)
    # V_k spans the principal output directions: no other rank-6 projector keeps more energy.
    y = x @ weight.T
    kept = float(torch.linalg.matrix_norm(y @ projector) ** 2)
    eigenvalues = torch.linalg.eigvalsh(y.T @ y)
    assert kept == pytest.approx(float(eigenvalues[-6:].sum()), rel=1e-9)


@pytest.mark.parametrize("method", ["svd", "hooi", "asvd", "svd-llm", "feature"])
def test_full_rank_reproduces_the_weight(data, method: str) -> None:  # type: ignore[no-untyped-def]
    weight, x = data
    rank = min(HEIGHT, WIDTH)
    if method in ("svd", "hooi"):
        approx = decompose(weight, rank, method=method).reconstruct()
    else:
        two = two_factors(weight, rank, method, stats_of(x))
        approx = two.factors().reconstruct()
    assert torch.allclose(approx, weight, atol=1e-9)


def test_activation_full_rank_is_exact_and_low_rank_is_the_input_projection(data) -> None:  # type: ignore[no-untyped-def]
    weight, x = data
    linear = torch.nn.Linear(WIDTH, HEIGHT, bias=True, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(weight)
    inputs = x[None, :50]
    full = ActivationLowRankLinear(linear, min(HEIGHT, WIDTH))
    assert torch.allclose(full(x[None, :20]), linear(x[None, :20]))  # rank ≥ min(n, W): exact
    low = ActivationLowRankLinear(linear, 4, iterations=6)
    q, coefficients = low.low_rank_input(inputs)
    assert torch.allclose(low(inputs), (q @ coefficients) @ weight.T + linear.bias, atol=1e-10)
    # With enough iterations the subspace is the best rank-4 one: Eckart–Young on X.
    best = torch.linalg.svdvals(inputs[0])
    error = float(torch.linalg.matrix_norm(inputs[0] - (q @ coefficients)[0]) ** 2)
    assert error == pytest.approx(float((best[4:] ** 2).sum()), rel=1e-3)
    assert low.weight is linear.weight  # no weight copied or changed


def test_cholesky_failure_is_one_error_or_an_allowed_svd_fallback(data) -> None:  # type: ignore[no-untyped-def]
    weight, _ = data
    broken = InputStats(-torch.eye(WIDTH, dtype=torch.float64), torch.ones(WIDTH, dtype=torch.float64),
                        torch.zeros(WIDTH, dtype=torch.float64), 10)
    with pytest.raises(CalibrationError, match="not positive definite"):
        two_factors(weight, 3, "svd-llm", broken)
    fallback = two_factors(weight, 3, "svd-llm", broken, allow_svd_fallback=True)
    assert fallback.jitter == -1.0
    assert torch.allclose(fallback.a @ fallback.b.T, decompose(weight, 3).reconstruct(), atol=1e-9)


def test_singular_gram_gets_a_recorded_jitter(data) -> None:  # type: ignore[no-untyped-def]
    weight, x = data
    x = x.clone()
    x[:, 3] = 0.0  # a channel that never fires: XᵀX is singular
    two = two_factors(weight, 5, "svd-llm", stats_of(x))
    assert two.jitter > 0.0
    assert torch.isfinite(two.b).all()
