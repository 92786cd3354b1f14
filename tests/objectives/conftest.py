"""Fixtures for the measured-efficiency objectives (latency, energy, memory)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from objectives.base import EvalTarget
from objectives.workload import Workload


@pytest.fixture
def tiny_target(tiny_llama) -> EvalTarget:  # type: ignore[no-untyped-def]
    """The shared tiny-llama as objectives see it, on CPU."""
    return tiny_llama.target()


@pytest.fixture
def small_workload() -> Workload:
    """A short workload: the values tests check do not depend on its size."""
    return Workload(prefill_tokens=12, decode_tokens=3, batch_size=2, warmup=1, repeats=3)


@pytest.fixture
def unchanged(tiny_target: EvalTarget) -> Iterator[Callable[[], None]]:
    """Snapshot tiny-llama's weights and mode; calling the result asserts both are as they were.

    The model is shared across the session, so it is put back in its mode afterwards.
    """
    model = tiny_target.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    training = model.training

    def check() -> None:
        after = model.state_dict()
        assert after.keys() == before.keys()
        for key, value in before.items():
            assert after[key].equal(value), key
        assert model.training is training

    yield check
    model.train(training)
