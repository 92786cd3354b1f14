"""Reuse of the undecomposed prefix: hidden states entering a layer, kept across model states.

A γ whose first decomposed layer is l₀ leaves layers 0 … l₀−1 as they were, so the hidden
states entering layer l₀ are exactly those the baseline (or any earlier trial sharing that
prefix) computed on the same inputs. :class:`PrefixStore` keeps such states in memory and
:mod:`objectives.fast_lm` starts a forward at the deepest stored layer its model shares.

Which prefix a model state has is read from the modules themselves, not from γ: a layer's
signature is the identity of its submodules and the identity, storage and in-place
version counter of its parameters and buffers. Surgery swaps modules (new identities);
undo puts the very same objects back, so the baseline's signatures come back with it, and
an in-place edit of a weight bumps its version. A state entering layer ``l`` is filed
under the hash of the model fingerprint, the embedding's signature and the signatures of
layers ``0 … l−1``, plus the exact batch (token ids, positions, segments), so a lookup can
only return a state the current model would compute itself, bit for bit.

What is stored: every layer of the first model state the store sees (in a study, the
baseline, measured first), and afterwards only prefixes seen in at least two model states
(a decomposed layer is a new object every trial, so its states never recur). Memory is
bounded: when the store
exceeds ``max_bytes`` it keeps every other stored layer (coarser checkpoints for every
batch) rather than dropping whole batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["PrefixStore", "PrefixView", "module_signature"]

DEFAULT_MAX_BYTES = 1 << 30  # 1 GiB


def module_signature(module: torch.nn.Module) -> str:
    """Identity of ``module``'s submodules and tensors: changes when surgery or an edit touches it."""
    digest = hashlib.sha1()
    for name, sub in module.named_modules():
        digest.update(f"{name}|{type(sub).__qualname__}|{id(sub)};".encode())
    for name, tensor in list(module.named_parameters()) + list(module.named_buffers()):
        # torch's in-place version counter: the one way to see an in-place weight edit.
        version = tensor._version
        digest.update(f"{name}|{id(tensor)}|{tensor.data_ptr()}|{version}|{tuple(tensor.shape)};".encode())
    return digest.hexdigest()


@dataclass
class PrefixView:
    """One model state's prefix hashes: ``hashes[l]`` names the computation entering layer ``l``."""

    hashes: list[str]
    model_hash: str


@dataclass
class PrefixStore:
    """Hidden states entering decoder layers, keyed by batch and by the model prefix that made them.

    Args:
        max_bytes: the memory bound; above it the layer stride doubles.
    """

    max_bytes: int = DEFAULT_MAX_BYTES
    stride: int = 1
    hits: int = 0
    layers_skipped: int = 0
    _states: dict[tuple[str, int, str], torch.Tensor] = field(default_factory=dict)
    _seen: dict[str, set[str]] = field(default_factory=dict)
    _first_model: str | None = None
    _bytes: int = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by stored hidden states."""
        return self._bytes

    def view(self, fingerprint: str, embedding: torch.nn.Module, layers: Sequence[torch.nn.Module]) -> PrefixView:
        """Hash every prefix of the model as it is now, and note which model state uses each."""
        running = hashlib.sha1(f"{fingerprint}|{module_signature(embedding)}".encode())
        hashes = [running.hexdigest()]
        for layer in layers:
            running.update(module_signature(layer).encode())
            hashes.append(running.hexdigest())
        view = PrefixView(hashes=hashes, model_hash=hashes[-1])
        if self._first_model is None:
            self._first_model = view.model_hash
        for prefix in hashes[1:-1]:
            self._seen.setdefault(prefix, set()).add(view.model_hash)
        return view

    def recurring(self, view: PrefixView, layer: int) -> bool:
        """True when the prefix entering ``layer`` belongs to more than one model state seen."""
        return 0 < layer < len(view.hashes) - 1 and len(self._seen.get(view.hashes[layer], ())) > 1

    def lookup(self, batch_key: str, view: PrefixView) -> tuple[int, torch.Tensor | None]:
        """The deepest stored state this model would compute for the batch: ``(layer, state)``."""
        for layer in range(len(view.hashes) - 2, 0, -1):
            state = self._states.get((batch_key, layer, view.hashes[layer]))
            if state is not None:
                self.hits += 1
                self.layers_skipped += layer
                return layer, state
        return 0, None

    def wants(self, view: PrefixView, layer: int) -> bool:
        """Whether the state entering ``layer`` should be kept.

        It is on the stride, and of the first model state or a recurring prefix.
        """
        if layer % self.stride or not 0 < layer < len(view.hashes) - 1:
            return False
        return view.model_hash == self._first_model or self.recurring(view, layer)

    def put(self, batch_key: str, view: PrefixView, layer: int, state: torch.Tensor) -> None:
        """Keep ``state`` (entering ``layer``), thinning the stored layers if over the bound."""
        key = (batch_key, layer, view.hashes[layer])
        if key in self._states or layer % self.stride:
            return
        size = state.numel() * state.element_size()
        if size > self.max_bytes:
            return
        self._states[key] = state
        self._bytes += size
        while self._bytes > self.max_bytes:
            self._thin()

    def clear(self) -> None:
        """Drop every stored state (the counters stay)."""
        self._states.clear()
        self._bytes = 0

    def _thin(self) -> None:
        self.stride *= 2
        for key in [k for k in self._states if k[1] % self.stride]:
            state = self._states.pop(key)
            self._bytes -= state.numel() * state.element_size()
        if self.stride > 1 << 16:  # nothing left to thin: drop everything
            self.clear()
