"""Read a block's decomposable tensors, and a model's matmul work, off a meta-device model.

Three storages are recognised, whatever the family: ``nn.Linear`` (weight out×in),
transformers' ``Conv1D`` (GPT-2; weight in×out, so H and W are swapped back), and a
3-D parameter ``(experts, H, W)`` of a mixture-of-experts module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from space.errors import InvalidConfigError
from space.family import Family
from space.spec import TensorSpec

if TYPE_CHECKING:
    import torch

__all__ = ["read_block", "linear_macs", "is_conv1d"]


def is_conv1d(module: Any) -> bool:
    """True for transformers' ``Conv1D`` (GPT-2 style: ``y = x @ W + b``, W stored in×out)."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _tensor_spec(family: Family, block: torch.nn.Module, short: str, path: str, name: str,
                 top_k: int) -> TensorSpec:
    import torch

    modules = dict(block.named_modules())
    parts = tuple(family.fused.get(short, ()))
    module = modules.get(path)
    if isinstance(module, torch.nn.Linear):
        return TensorSpec(name=short, path=path, out_features=module.out_features,
                          in_features=module.in_features, bias=module.bias is not None, parts=parts)
    if module is not None and is_conv1d(module):
        in_features, out_features = (int(d) for d in module.weight.shape)
        return TensorSpec(name=short, path=path, out_features=out_features, in_features=in_features,
                          bias=module.bias is not None, kind="conv1d", parts=parts)
    parent_path, _, param_name = path.rpartition(".")
    parent = modules.get(parent_path)
    param = getattr(parent, param_name, None) if parent is not None else None
    if isinstance(param, torch.nn.Parameter) and param.ndim == 3:
        experts, out_features, in_features = (int(d) for d in param.shape)
        if getattr(parent, "is_transposed", False) or getattr(parent, "has_bias", False):
            raise InvalidConfigError(
                f"{name}: experts at {parent_path!r} are stored transposed or with biases; "
                f"only (experts, out, in) weights without bias are supported"
            )
        return TensorSpec(name=short, path=path, out_features=out_features, in_features=in_features,
                          kind="experts", experts=experts, active=min(top_k, experts), parts=parts)
    found = type(module).__name__ if module is not None else "nothing"
    raise InvalidConfigError(
        f"{name}: block has {found} at {path!r} ({short}); expected an nn.Linear, a Conv1D or a "
        f"3-D experts parameter"
    )


def read_block(family: Family, block: torch.nn.Module, name: str, top_k: int) -> tuple[TensorSpec, ...]:
    """The decomposable tensors of one block, in the family's order."""
    return tuple(_tensor_spec(family, block, short, path, name, top_k)
                 for short, path in family.tensors.items())


def linear_macs(family: Family, model: torch.nn.Module, blocks: Any, top_k: int) -> int:
    """Multiply-accumulates per token of every weight matmul (LM head and routers included).

    Experts count ``top_k`` of their matrices per token, as only those run.
    """
    import torch

    macs = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            macs += module.in_features * module.out_features
        elif is_conv1d(module):
            macs += int(cast("torch.Tensor", module.weight).numel())
    for block in blocks:
        for path in family.routers:
            router = block.get_submodule(path)
            if not isinstance(router, torch.nn.Linear):  # a Linear router is counted above
                macs += int(cast("torch.Tensor", router.weight).numel())
        for tensor in read_block(family, block, "", top_k):
            if tensor.kind == "experts":
                macs += tensor.active * tensor.out_features * tensor.in_features
    return int(macs)
