"""Tucker factors: exactness at full rank, the Eckart–Young optimum at every rank, svd = hooi."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import dse.svd as svd
from dse.decompose import (
    METHODS,
    SingularTriplets,
    TuckerFactors,
    decompose,
    optimal_relative_error,
    relative_error,
    truncated_svd,
)
from space.errors import InvalidConfigError, UnknownNameError


def _matrix(height: int, width: int, *, decay: float = 0.6, seed: int = 0,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A seeded matrix with distinct, power-law singular values (like trained weights)."""
    g = torch.Generator().manual_seed(seed)
    k = min(height, width)
    u, _ = torch.linalg.qr(torch.randn(height, k, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(width, k, generator=g, dtype=torch.float64))
    s = torch.arange(1, k + 1, dtype=torch.float64) ** -decay
    return ((u * s) @ v.T).to(dtype)


def _gaussian(height: int, width: int, *, seed: int = 0) -> torch.Tensor:
    return torch.randn(height, width, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("method", ["svd", "hooi"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(48, 80), (80, 48)])
def test_full_rank_reproduces_the_weight(method: str, dtype: torch.dtype,
                                         shape: tuple[int, int]) -> None:
    weight = _gaussian(*shape).to(dtype)
    factors = decompose(weight, min(shape), method=method)
    assert relative_error(weight, factors) < 1e-5
    assert factors.u1.shape == (shape[0], min(shape))
    assert factors.core.shape == (min(shape), min(shape))
    assert factors.u2.shape == (shape[1], min(shape))
    assert all(t.dtype == dtype for t in factors)


@pytest.mark.parametrize("method", ["svd", "hooi"])
@pytest.mark.parametrize("rank", [1, 5, 17, 40])
def test_rank_r_error_is_the_optimum_from_the_singular_values(method: str, rank: int) -> None:
    weight = _matrix(64, 96)
    best = optimal_relative_error(torch.linalg.svdvals(weight.double()), rank)
    error = relative_error(weight, decompose(weight, rank, method=method))
    assert best > 0.05
    assert error == pytest.approx(best, rel=1e-3)
    assert error >= best * (1 - 1e-6)  # nothing beats Eckart–Young


@pytest.mark.parametrize("rank", [1, 8, 30])
def test_hooi_and_svd_agree(rank: int) -> None:
    weight = _matrix(70, 50, decay=0.8, seed=3)
    svd, hooi = decompose(weight, rank), decompose(weight, rank, method="hooi")
    scale = float(torch.linalg.matrix_norm(weight))
    assert float(torch.linalg.matrix_norm(svd.reconstruct() - hooi.reconstruct())) / scale < 1e-4
    # Same subspaces (distinct singular values make them unique).
    for a, b in ((svd.u1, hooi.u1), (svd.u2, hooi.u2)):
        assert torch.allclose(a @ a.T, b @ b.T, atol=1e-4)
    assert relative_error(weight, svd) == pytest.approx(relative_error(weight, hooi), rel=1e-5)


def test_svd_factors_are_orthonormal_with_a_diagonal_core() -> None:
    weight = _matrix(40, 60)
    factors = decompose(weight, 12, method="svd")
    eye = torch.eye(12)
    assert torch.allclose(factors.u1.T @ factors.u1, eye, atol=1e-5)
    assert torch.allclose(factors.u2.T @ factors.u2, eye, atol=1e-5)
    core = factors.core
    assert torch.equal(core, torch.diag(torch.diagonal(core)))
    diagonal = torch.diagonal(core)
    assert bool((diagonal[:-1] >= diagonal[1:]).all())
    assert torch.allclose(diagonal, torch.linalg.svdvals(weight)[:12], rtol=1e-5)


def test_lower_ranks_are_exact_slices_of_a_higher_rank_svd() -> None:
    weight = _matrix(50, 70)
    triplets = truncated_svd(weight, 20)
    for rank in (1, 7, 20):
        sliced = triplets.factors(rank)
        direct = decompose(weight, rank)
        assert all(torch.equal(a, b) for a, b in zip(sliced, direct, strict=True))
    with pytest.raises(InvalidConfigError, match="between 1 and the 20 stored"):
        triplets.factors(21)


@pytest.mark.parametrize("kind", ["decaying", "gaussian"])
@pytest.mark.parametrize("rank", [1, 16, 64])
def test_randomized_path_reaches_the_optimum(kind: str, rank: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    weight = _matrix(512, 1376, decay=0.3, seed=1) if kind == "decaying" else _gaussian(512, 1376)

    def no_fallback(matrix: torch.Tensor, rank: int) -> SingularTriplets:
        raise AssertionError("the randomized iteration did not converge")

    singular_values = torch.linalg.svdvals(weight.double())
    monkeypatch.setattr(svd, "_full_svd", no_fallback)
    triplets = truncated_svd(weight, rank, algorithm="randomized")
    error = relative_error(weight, triplets.factors())
    best = optimal_relative_error(singular_values, rank)
    assert best <= error <= best * (1 + 1e-3)
    # Its factors are a proper SVD: orthonormal and sorted.
    assert torch.allclose(triplets.u.T @ triplets.u, torch.eye(rank), atol=1e-4)
    assert torch.allclose(triplets.v.T @ triplets.v, torch.eye(rank), atol=1e-4)
    assert bool((triplets.s[:-1] >= triplets.s[1:]).all())


def test_randomized_iteration_is_seeded() -> None:
    weight = _gaussian(300, 700, seed=5)
    a = truncated_svd(weight, 10, algorithm="randomized", seed=1)
    b = truncated_svd(weight, 10, algorithm="randomized", seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_auto_uses_the_randomized_path_only_for_large_matrices_at_small_ranks() -> None:
    assert svd._uses_randomized((4096, 11008), 1)
    assert svd._uses_randomized((4096, 11008), 256)
    assert not svd._uses_randomized((4096, 11008), 2048)
    assert not svd._uses_randomized((576, 1536), 1)  # SmolLM2: the full SVD is cheap


def test_unconverged_randomized_iteration_falls_back_to_the_full_svd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    weight = _gaussian(200, 300)
    monkeypatch.setattr(svd, "_converged", lambda errors: False)
    triplets = truncated_svd(weight, 5, algorithm="randomized")
    full = truncated_svd(weight, 5, algorithm="full")
    assert all(torch.equal(x, y) for x, y in zip(triplets, full, strict=True))


def test_hooi_passes_tol_and_max_iter_to_tensorly(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorly.decomposition

    seen: dict[str, object] = {}
    real = tensorly.decomposition.tucker

    def spy(tensor, rank, **kwargs):  # type: ignore[no-untyped-def]
        seen.update(kwargs, rank=rank, backend=tensorly.get_backend())
        return real(tensor, rank, **kwargs)

    monkeypatch.setattr(tensorly.decomposition, "tucker", spy)
    weight = _matrix(30, 40)
    factors = decompose(weight, 4, method="hooi", tol=1e-3, max_iter=7)
    assert seen["n_iter_max"] == 7 and seen["tol"] == 1e-3
    assert seen["rank"] == [4, 4] and seen["backend"] == "pytorch"
    assert tensorly.get_backend() == "numpy"  # the global backend is left as it was
    assert relative_error(weight, factors) == pytest.approx(
        optimal_relative_error(torch.linalg.svdvals(weight.double()), 4), rel=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("method", ["svd", "hooi"])
def test_factors_come_back_in_the_weights_dtype(dtype: torch.dtype, method: str) -> None:
    weight = _matrix(32, 48).to(dtype)
    factors = decompose(weight, 6, method=method)
    assert {t.dtype for t in factors} == {dtype}
    assert {t.device for t in factors} == {weight.device}
    tolerance = 1e-3 if dtype == torch.float64 else 2e-2
    best = optimal_relative_error(torch.linalg.svdvals(weight.double()), 6)
    assert relative_error(weight, factors) == pytest.approx(best, rel=tolerance)


def test_relative_error_is_computed_in_float64() -> None:
    weight = _gaussian(257, 131, seed=2)
    factors = decompose(weight, 9)
    w = weight.numpy().astype(np.float64)
    approx = (factors.u1.numpy().astype(np.float64) @ factors.core.numpy().astype(np.float64)
              @ factors.u2.numpy().astype(np.float64).T)
    expected = np.linalg.norm(w - approx) / np.linalg.norm(w)
    # Row blocks smaller than the matrix must not change the answer.
    assert relative_error(weight, factors, chunk_rows=50) == pytest.approx(expected, rel=1e-12)
    assert relative_error(weight, factors) == pytest.approx(expected, rel=1e-12)


def test_relative_error_of_a_zero_weight() -> None:
    zero = torch.zeros(4, 3)
    factors = TuckerFactors(torch.zeros(4, 1), torch.zeros(1, 1), torch.zeros(3, 1))
    assert relative_error(zero, factors) == 0.0
    nonzero = TuckerFactors(torch.ones(4, 1), torch.ones(1, 1), torch.ones(3, 1))
    assert relative_error(zero, nonzero) == math.inf


def test_optimal_relative_error_values() -> None:
    s = torch.tensor([4.0, 3.0])
    assert optimal_relative_error(s, 0) == 1.0
    assert optimal_relative_error(s, 1) == pytest.approx(0.6)
    assert optimal_relative_error(s, 2) == 0.0
    assert optimal_relative_error(torch.zeros(3), 1) == 0.0


def test_tucker_factors_count_the_papers_parameters() -> None:
    factors = decompose(_matrix(30, 50), 4)
    assert factors.rank == 4
    assert factors.shape == (30, 50)
    assert factors.numel == 30 * 4 + 4 * 4 + 4 * 50


def test_methods_registry_and_unknown_method() -> None:
    assert METHODS.names() == ["hooi", "svd"]
    with pytest.raises(UnknownNameError) as excinfo:
        decompose(_matrix(8, 8), 2, method="hoi")
    message = str(excinfo.value)
    assert "Did you mean 'hooi'?" in message and "Available: hooi, svd" in message
    assert "\n" not in message


@pytest.mark.parametrize("rank", [0, 9, -1, 2.0, True])
def test_rank_out_of_range_is_one_clear_error(rank: object) -> None:
    expected = r"between 1 and min\(H, W\) = 8 for a 8×12 weight"
    with pytest.raises(InvalidConfigError, match=expected):
        decompose(_matrix(8, 12), rank)  # type: ignore[arg-type]


def test_bad_weights_and_options_are_rejected() -> None:
    with pytest.raises(InvalidConfigError, match="2-D tensor"):
        decompose(torch.ones(3, 4, 5), 1)
    with pytest.raises(InvalidConfigError, match="floating point"):
        decompose(torch.ones(3, 4, dtype=torch.int64), 1)
    with pytest.raises(InvalidConfigError, match="tol must be positive"):
        decompose(_matrix(8, 8), 2, method="hooi", tol=0.0)
    with pytest.raises(InvalidConfigError, match="max_iter must be a positive integer"):
        decompose(_matrix(8, 8), 2, method="hooi", max_iter=0)
    with pytest.raises(InvalidConfigError, match="unknown SVD algorithm"):
        truncated_svd(_matrix(8, 8), 2, algorithm="lanczos")  # type: ignore[arg-type]


def test_decompose_does_not_track_gradients() -> None:
    weight = _matrix(10, 12).requires_grad_(True)
    factors = decompose(weight, 3)
    assert not any(t.requires_grad for t in factors)


def test_convergence_needs_three_steps_and_extrapolates_the_slower_ratio() -> None:
    tol = svd.RANDOMIZED_EXCESS_TOL
    # A fast first step after the sketch, then slower ones: one early ratio would stop here.
    assert not svd._converged([1.0205, 1.0047, 1.0022])
    assert not svd._converged([1.0205, 1.0047, 1.0022, 1.0012])
    # Geometric steps with ratio 1/2: the remaining improvement equals the last step.
    last = 0.5 * tol
    assert svd._converged([1.0 + 7 * last, 1.0 + 3 * last, 1.0 + last, 1.0])
    assert not svd._converged([1.0 + 28 * last, 1.0 + 12 * last, 1.0 + 4 * last, 1.0])
    assert svd._converged([2.0, 1.5, 1.2, 1.2])  # no progress left


def test_a_fooled_monitor_falls_back_to_the_full_svd(monkeypatch: pytest.MonkeyPatch) -> None:
    weight = _matrix(300, 700, decay=0.3, seed=4)
    real = svd._union_whitening
    # Inflated whitening: the monitor believes it captures more energy than it does.
    monkeypatch.setattr(svd, "_union_whitening", lambda a, b: 1.2 * real(a, b))
    triplets = truncated_svd(weight, 10, algorithm="randomized")
    full = truncated_svd(weight, 10, algorithm="full")
    assert all(torch.equal(x, y) for x, y in zip(triplets, full, strict=True))
