"""ModelSpec: what the design space needs to know of an architecture, and nothing more.

A spec is read off a model instantiated on the meta device (shapes, no weights, no
download), through the family adapter of its ``model_type``. Specs are pure data
(pydantic), so they are cached as JSON and later space commands never import torch.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict

from space.errors import InvalidConfigError

__all__ = ["TensorSpec", "ModelSpec", "spec_from_config"]


class TensorSpec(BaseModel):
    """One decomposable weight of a block: ``W`` is H×W = out_features × in_features."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str  # relative to the block, e.g. "self_attn.q_proj"
    out_features: int  # H
    in_features: int  # W
    bias: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def rank(self) -> int:
        """The rank bound of Def. 3: a matrix has at most min(H, W) independent rows."""
        return min(self.out_features, self.in_features)

    @property
    def params(self) -> int:
        return self.out_features * self.in_features


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
        payload = json.dumps(self.model_dump(exclude={"name"}), sort_keys=True)
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

    family = family_for_model_type(config.model_type)
    auto = getattr(transformers, family.auto_class)
    with torch.device("meta"):
        model = auto.from_config(config)
    layer_path, blocks = family.locate_layers(model)

    def read_block(block: torch.nn.Module) -> tuple[TensorSpec, ...]:
        modules = dict(block.named_modules())
        found = []
        for short, path in family.tensors.items():
            linear = modules.get(path)
            if not isinstance(linear, torch.nn.Linear):
                raise InvalidConfigError(f"{name}: block has no Linear at {path!r} ({short})")
            found.append(
                TensorSpec(
                    name=short,
                    path=path,
                    out_features=linear.out_features,
                    in_features=linear.in_features,
                    bias=linear.bias is not None,
                )
            )
        return tuple(found)

    tensors = read_block(blocks[0])
    for index, block in enumerate(blocks):
        if read_block(block) != tensors:
            raise InvalidConfigError(f"{name}: block {index} differs from block 0; not supported")

    total = sum(p.numel() for p in model.parameters())  # parameters() yields tied ones once
    linear_macs = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
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
        linear_macs_per_token=int(linear_macs),
        attention_dim=int(n_heads * head_dim),
        hidden_size=int(config.hidden_size),
        vocab_size=int(config.vocab_size),
    )
