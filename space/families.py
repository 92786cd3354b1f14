"""Model-family adapters: which modules of a layer are decomposable, under which short names.

A family knows the relative module path of each decomposable weight inside one
transformer block, and where the list of blocks sits in a model. The paths are the
Hugging Face ones; a family matches configs by their ``model_type``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from space.errors import InvalidConfigError
from space.registry import Registry

if TYPE_CHECKING:
    import torch

__all__ = ["Family", "FAMILIES", "family_for_model_type"]


class Family(BaseModel):
    """One architecture family: short tensor names -> module paths inside a block."""

    model_config = ConfigDict(frozen=True)

    name: str
    model_types: tuple[str, ...]
    # Short name -> module path relative to one block, in the paper's tensor order.
    tensors: dict[str, str]
    # Where the ModuleList of blocks may sit, tried in order (task heads add prefixes).
    layer_containers: tuple[str, ...]
    # Which transformers Auto class builds the bare architecture from a config.
    auto_class: str

    def locate_layers(self, model: torch.nn.Module) -> tuple[str, Any]:
        """Return ``(path, ModuleList)`` of the blocks of a loaded model of this family."""
        modules = dict(model.named_modules())
        for path in self.layer_containers:
            if path in modules:
                return path, modules[path]
        raise InvalidConfigError(
            f"cannot find the transformer blocks of this {self.name} model; "
            f"looked for {', '.join(self.layer_containers)}"
        )


LLAMA = Family(
    name="llama",
    model_types=("llama", "mistral", "qwen2", "qwen3", "smollm3"),
    tensors={
        "q": "self_attn.q_proj",
        "k": "self_attn.k_proj",
        "v": "self_attn.v_proj",
        "o": "self_attn.o_proj",
        "gate": "mlp.gate_proj",
        "up": "mlp.up_proj",
        "down": "mlp.down_proj",
    },
    layer_containers=("model.layers", "layers", "model.model.layers"),
    auto_class="AutoModelForCausalLM",
)

BERT = Family(
    name="bert",
    model_types=("bert", "roberta"),
    tensors={
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "attn_out": "attention.output.dense",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
    },
    layer_containers=("encoder.layer", "bert.encoder.layer", "roberta.encoder.layer"),
    auto_class="AutoModel",
)

FAMILIES: Registry[Family] = Registry("model family")
FAMILIES.register(LLAMA.name, LLAMA)
FAMILIES.register(BERT.name, BERT)


def family_for_model_type(model_type: str) -> Family:
    """The family whose adapter handles configs of ``model_type``."""
    for name in FAMILIES:
        family = FAMILIES.get(name)
        if model_type in family.model_types:
            return family
    supported = sorted(t for n in FAMILIES for t in FAMILIES.get(n).model_types)
    raise InvalidConfigError(
        f"model type {model_type!r} has no decomposition adapter; supported: {', '.join(supported)}"
    )
