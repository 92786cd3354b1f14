"""ModelSpec: what the design space needs to know of an architecture, and nothing more.

A spec is read off a model instantiated on the meta device (shapes, no weights, no
download), through the family adapter of its ``model_type``. Specs are pure data
(pydantic), so they are cached as JSON and later space commands never import torch.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from space.errors import InvalidConfigError

__all__ = ["TensorSpec", "ModelSpec", "spec_from_config"]


TensorKind = Literal["linear", "conv1d", "experts"]
# TensorSpec fields added after the first release: left out of fingerprints at their
# defaults, so the fingerprints of Llama and BERT specs did not change.
_LATER_FIELDS = {"kind": "linear", "experts": 1, "active": 1, "parts": ()}


class TensorSpec(BaseModel):
    """One decomposable weight of a block: ``W`` is H×W = out_features × in_features.

    ``kind`` says how the model stores it: an ``nn.Linear`` (weight out×in), a GPT-2
    ``Conv1D`` (weight stored in×out, transposed here), or ``experts``: one H×W matrix
    per expert in a 3-D parameter (``path`` then names that parameter). An experts
    tensor counts ``experts`` matrices, each factored on its own at the same rank, of
    which ``active`` run per token (the router's top-k).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    path: str  # relative to the block, e.g. "self_attn.q_proj" or "mlp.experts.down_proj"
    out_features: int  # H
    in_features: int  # W
    bias: bool = False
    kind: TensorKind = "linear"
    experts: int = 1  # matrices of this shape per layer (MoE: the number of experts)
    active: int = 1  # of which run per token (MoE: top-k)
    parts: tuple[str, ...] = ()  # a fused weight's projections, in row order

    @property
    def module(self) -> str:
        """Path of the module holding the weight (an experts tensor's parent module)."""
        return self.path.rpartition(".")[0] if self.kind == "experts" else self.path

    @property
    def param(self) -> str:
        """Name of the weight inside :attr:`module`."""
        return self.path.rpartition(".")[2] if self.kind == "experts" else "weight"

    @property
    def handling(self) -> str:
        """How the engine treats this weight, in words (``dse space show``, the docs)."""
        notes = []
        if self.parts:
            notes.append(f"fused {'|'.join(self.parts)} (one tensor)")
        if self.kind == "conv1d":
            notes.append("Conv1D (weight stored transposed)")
        if self.kind == "experts":
            notes.append(f"{self.experts} experts ({self.active} per token), each factored")
        return "; ".join(notes) or "linear"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def rank(self) -> int:
        """The rank bound of Def. 3: a matrix has at most min(H, W) independent rows."""
        return min(self.out_features, self.in_features)

    @property
    def params(self) -> int:
        """Weight parameters of this tensor in one layer (every expert's matrix)."""
        return self.experts * self.out_features * self.in_features

    def factored_params(self, rank: int, *, two_factor: bool = False) -> int:
        """Parameters after Tucker-2 at ``rank``: for each expert, H·r + r² + r·W.

        ``two_factor`` (keep ratios, data-aware methods) drops the r² core.
        """
        core = 0 if two_factor else rank * rank
        return self.experts * (self.out_features * rank + core + rank * self.in_features)


class ModelSpec(BaseModel):
    """An architecture as the design space sees it: N_layers identical blocks of tensors."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: str
    model_type: str
    n_layers: int
    layer_path: str  # module path of the ModuleList of blocks, e.g. "model.layers"
    tensors: tuple[TensorSpec, ...]
    total_params: int  # unique parameters of the whole model (tied weights once)
    linear_macs_per_token: int  # multiply-accumulates of every Linear (lm_head included)
    attention_dim: int  # n_heads × head_dim, for the S² attention MACs
    hidden_size: int
    vocab_size: int

    @property
    def n_tensors(self) -> int:
        return len(self.tensors)

    @property
    def tensor_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors)

    @cached_property
    def _by_name(self) -> dict[str, TensorSpec]:
        return {t.name: t for t in self.tensors}

    def tensor(self, name: str) -> TensorSpec:
        """The tensor named ``name``; an unknown name lists the allowed ones."""
        try:
            return self._by_name[name]
        except KeyError:
            raise InvalidConfigError(
                f"unknown tensor {name!r} for {self.name}; allowed: "
                f"{', '.join(self.tensor_names)}, or all"
            ) from None

    def module_path(self, layer: int, tensor: str) -> str:
        """Full module path of tensor ``tensor`` in block ``layer`` (0-based)."""
        return f"{self.layer_path}.{layer}.{self.tensor(tensor).path}"

    def fingerprint(self) -> str:
        """A short hash of the architecture (not the weights)."""
        form = self.model_dump(exclude={"name"})
        for tensor in form["tensors"]:
            for key, default in _LATER_FIELDS.items():
                if key in tensor and tensor[key] == default:
                    del tensor[key]
        payload = json.dumps(form, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def spec_from_config(config: Any, name: str) -> ModelSpec:
    """Instantiate ``config``'s model on the meta device and read its spec.

    Args:
        config: a ``transformers.PretrainedConfig``.
        name: the name the spec is shown under.

    Raises:
        InvalidConfigError: the model type has no family adapter, or its blocks differ.
    """
    import torch
    import transformers

    from space.families import family_for_model_type
    from space.spec_reader import linear_macs, read_block

    family = family_for_model_type(config.model_type)
    auto = getattr(transformers, family.auto_class)
    with torch.device("meta"):
        model = auto.from_config(config)
    layer_path, blocks = family.locate_layers(model)
    top_k = int(getattr(config, family.top_k_field)) if family.top_k_field else 1

    tensors = read_block(family, blocks[0], name, top_k)
    for index, block in enumerate(blocks):
        if read_block(family, block, name, top_k) != tensors:
            raise InvalidConfigError(f"{name}: block {index} differs from block 0; not supported")

    total = sum(p.numel() for p in model.parameters())  # parameters() yields tied ones once
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return ModelSpec(
        name=name,
        family=family.name,
        model_type=config.model_type,
        n_layers=len(blocks),
        layer_path=layer_path,
        tensors=tensors,
        total_params=int(total),
        linear_macs_per_token=linear_macs(family, model, blocks, top_k),
        attention_dim=int(n_heads * head_dim),
        hidden_size=int(config.hidden_size),
        vocab_size=int(config.vocab_size),
    )
