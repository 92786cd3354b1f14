"""The paper's reference configurations (Table IV) and how their layers map onto another model.

Table IV lists, for Llama-2-7B (32 layers, numbered from 1), which layers to decompose
(all tensors, rank 1) for growing parameter reductions. A study enqueues these rows
first, scaled to its model's depth, and ``benchmarks/bench_latency.py`` times them; both
scale with :func:`scale_paper_layers`.
"""

from __future__ import annotations

from collections.abc import Sequence

from space.errors import InvalidConfigError

__all__ = ["PAPER_DEPTH", "PAPER_TABLE_IV", "scale_paper_layers"]

PAPER_DEPTH = 32
# Table IV of the paper (Llama-2-7B, 32 layers, 1-based layer numbers), by parameter reduction.
PAPER_TABLE_IV: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("6%", (3, 30)),
    ("9%", (3, 18, 32)),
    ("15%", (3, 9, 15, 21, 27)),
    ("21%", (5, 9, 13, 17, 21, 25, 29)),
    ("33%", (3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 32)),
    ("48%", tuple(range(1, 32, 2))),
    ("60%", (2, 4, 6, 8, 10, *range(11, 20), 21, 23, 25, 27, 29, 31)),
    ("75%", (2, 4, 6, 8, 10, *range(11, 31))),
    ("84%", (1, 3, 5, 7, 9, *range(10, 33))),
    ("96%", tuple(range(1, 33))),
)


def scale_paper_layers(
    layers_1based: Sequence[int], n_layers: int, *, low: int = 0, high: int | None = None
) -> tuple[int, ...]:
    """0-based layers of an ``n_layers`` model at the same relative depth as the paper's.

    Each 1-based layer l of the 32-layer model goes to round((l−1)·(N−1)/31), then into
    ``low..high`` (default: every layer) when it falls outside (the paper skips early
    layers too; on a small model its layer 3 lands on layer 0); duplicates are merged.

    Raises:
        InvalidConfigError: ``low..high`` is not a range of the model's layers.
    """
    top = n_layers - 1 if high is None else high
    if not 0 <= low <= top <= n_layers - 1:
        raise InvalidConfigError(f"layer range {low}..{top} is not within 0..{n_layers - 1}")
    return tuple(sorted({
        min(top, max(low, round((layer - 1) * (n_layers - 1) / (PAPER_DEPTH - 1)))) for layer in layers_1based
    }))
