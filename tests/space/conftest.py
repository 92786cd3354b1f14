"""Fixtures for the design-space tests: small hand-built specs and cached presets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from space.presets import load_spec
from space.spec import ModelSpec, TensorSpec


def make_spec(n_layers: int, shapes: dict[str, tuple[int, int]], *, name: str = "toy") -> ModelSpec:
    """A ModelSpec written by hand: no torch, any tensor ranks we want to test."""
    tensors = tuple(
        TensorSpec(name=tensor, path=f"mlp.{tensor}", out_features=h, in_features=w)
        for tensor, (h, w) in shapes.items()
    )
    per_layer = sum(t.params for t in tensors)
    return ModelSpec(
        name=name,
        family="llama",
        model_type="llama",
        n_layers=n_layers,
        layer_path="model.layers",
        tensors=tensors,
        total_params=n_layers * per_layer + 1000,
        linear_macs_per_token=n_layers * per_layer,
        attention_dim=8,
        hidden_size=8,
        vocab_size=100,
    )


@pytest.fixture(scope="session")
def toy_spec() -> ModelSpec:
    """6 layers, 3 tensors of ranks 2, 3 and 4: small enough to enumerate every γ."""
    return make_spec(6, {"a": (2, 5), "b": (3, 3), "c": (6, 4)})


@pytest.fixture(scope="session")
def preset() -> Callable[[str], ModelSpec]:
    """load_spec with a per-session memo (the first build of a preset imports torch)."""
    memo: dict[str, ModelSpec] = {}

    def get(name: str) -> ModelSpec:
        if name not in memo:
            memo[name] = load_spec(name)
        return memo[name]

    return get


@pytest.fixture(scope="session")
def spec_factory() -> Callable[..., ModelSpec]:
    """:func:`make_spec` for tests that need their own shapes."""
    return make_spec
