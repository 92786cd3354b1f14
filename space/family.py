"""One model family's adapter: where its decomposable weights sit and how they are stored.

A family knows, for one transformer block, the path of each decomposable weight under
a short name (``q``, ``qkv``, ``gate_up``, ``down``, ...), and where the list of blocks
sits in a model. The paths are the Hugging Face ones. A path names either a module
(``nn.Linear``, or GPT-2's ``Conv1D`` whose weight is stored transposed) or a 3-D
parameter of a mixture-of-experts module (``mlp.experts.down_proj``: one H×W matrix per
expert); :func:`space.spec.spec_from_config` reads which one it is off the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["Family"]


class Family(BaseModel):
    """One architecture family: short tensor names -> weight paths inside a block."""

    model_config = ConfigDict(frozen=True)

    name: str
    model_types: tuple[str, ...]
    # Short name -> module (or expert parameter) path relative to one block, in the
    # paper's tensor order (attention q, k, v, o, then the MLP).
    tensors: dict[str, str]
    # Where the ModuleList of blocks may sit, tried in order (task heads add prefixes).
    layer_containers: tuple[str, ...]
    # Which transformers Auto class builds the architecture (with its LM head) from a config.
    auto_class: str
    # Fused weights: short name -> the projections it holds, in row order (``qkv``: q, k, v).
    fused: dict[str, tuple[str, ...]] = {}
    # Router modules of a mixture-of-experts block: never decomposed, counted in MACs.
    routers: tuple[str, ...] = ()
    # Config field giving the experts each token runs through (MoE only).
    top_k_field: str | None = None
    # Weights of a block deliberately left out, with the reason (shown in docs and `space show`).
    excluded: dict[str, str] = {}

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
