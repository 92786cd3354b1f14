"""Singular-value spectra of a model's decomposable tensors, for spectrum-driven rank allocation.

The ``spectrum`` encoding needs, per (layer, tensor), how much of the weight's energy
each rank-1 component holds. They come from the model's weights once per fingerprint
and are kept as JSON under ``space.env.cache_dir() / "spectra"``. A process that has the
model loaded already (the study's evaluator) registers it with :func:`register`, so the
spectra are computed from it instead of loading the model again.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dse.models import LoadedModel
    from space.spec import ModelSpec

__all__ = ["register", "energy_shares", "allocate_ranks"]

_LOADED: dict[str, LoadedModel] = {}
_MEMORY: dict[str, dict[tuple[int, str], list[float]]] = {}


def register(loaded: LoadedModel) -> None:
    """Let spectra of ``loaded.spec.name`` be computed from this already loaded model."""
    _LOADED[loaded.spec.name] = loaded


def energy_shares(spec: ModelSpec, model: str) -> dict[tuple[int, str], list[float]]:
    """Per tensor, σ_j² / Σσ² for every j (largest first), from the weights of ``model``."""
    if spec.name in _MEMORY:
        return _MEMORY[spec.name]
    from space.env import cache_dir

    loaded = _LOADED.get(spec.name)
    if loaded is None:
        from dse.models import load_model

        loaded = load_model(model)
    folder = cache_dir() / "spectra"
    path = folder / f"{loaded.fingerprint[:32]}.json"
    shares: dict[tuple[int, str], list[float]]
    if path.is_file():
        raw = json.loads(path.read_text())
        shares = {(int(k.split(":")[0]), k.split(":")[1]): v for k, v in raw.items()}
    else:
        import torch

        from dse.surgery import decomposable_paths

        shares = {}
        with torch.no_grad():
            for pair, module_path in decomposable_paths(loaded).items():
                module: Any = loaded.model.get_submodule(module_path)
                weight = module.weight.detach().double()
                energy = torch.linalg.svdvals(weight) ** 2
                shares[pair] = (energy / energy.sum().clamp(min=1e-300)).tolist()
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({f"{k[0]}:{k[1]}": v for k, v in shares.items()}))
        os.replace(tmp, path)
    _MEMORY[spec.name] = shares
    return shares


def allocate_ranks(
    shapes: dict[tuple[int, str], tuple[int, int]], shares: dict[tuple[int, str], list[float]],
    keep: float,
) -> dict[tuple[int, str], int]:
    """Ranks that keep ``keep`` of the tensors' parameters and lose the least relative energy.

    Each rank-1 component j of tensor i costs H_i + W_i parameters and holds share s_ij
    of the tensor's energy; the ranks minimizing Σ_i (relative truncation loss of i)
    under the parameter budget take every component with s_ij / (H_i + W_i) above a
    threshold λ (a Lagrangian / water-filling argument, as in D-Rank and SVD-LLM V2's
    loss-driven allocation), with λ found by bisection. At least rank 1 each.
    """
    budget = keep * sum(h * w for h, w in shapes.values())

    def ranks_at(threshold: float) -> dict[tuple[int, str], int]:
        out = {}
        for pair, (h, w) in shapes.items():
            limit = min(h, w)
            cut = threshold * (h + w)
            out[pair] = max(1, min(limit, sum(1 for s in shares[pair][:limit] if s > cut)))
        return out

    def cost(ranks: dict[tuple[int, str], int]) -> float:
        return sum(r * sum(shapes[p]) for p, r in ranks.items())

    low, high = 0.0, 1.0  # threshold 1 keeps rank 1 everywhere; 0 keeps everything
    for _ in range(60):
        middle = (low + high) / 2
        if cost(ranks_at(middle)) > budget:
            low = middle
        else:
            high = middle
    return ranks_at(high)
