"""Read a decomposable weight out of its module, and build the module that replaces it.

The one place that knows how each storage of a :class:`~space.spec.TensorSpec` looks:
``linear`` (``nn.Linear``, weight out×in), ``conv1d`` (GPT-2's ``Conv1D``, weight in×out:
its transpose is decomposed, and a :class:`~dse.layers.FactorizedLinear` computes the same
``x·W + b``), and ``experts`` (a 3-D parameter of a mixture-of-experts module, factored
expert by expert into a :class:`~dse.layers_moe.FactorizedExperts`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

    from dse.decompose import TuckerFactors
    from space.spec import TensorSpec

__all__ = ["dense_weight", "factorized", "factors_of", "relative_error"]


def dense_weight(original: torch.nn.Module, tensor: TensorSpec, where: str) -> torch.Tensor:
    """The H×W weight (E×H×W for experts) held by the original module, detached.

    Raises:
        InvalidConfigError: the module is not what the spec says (changed outside dse).
    """
    import torch

    from space.spec_reader import is_conv1d

    if tensor.kind == "linear" and isinstance(original, torch.nn.Linear):
        return original.weight.detach()
    if tensor.kind == "conv1d" and is_conv1d(original):
        return _tensor(original, "weight").detach().T
    if tensor.kind == "experts":
        param = getattr(original, tensor.param, None)
        if isinstance(param, torch.nn.Parameter) and param.ndim == 3:
            return param.detach()
    raise InvalidConfigError(
        f"module {where!r} is a {type(original).__name__}, not the {tensor.kind} its spec names; "
        f"cannot decompose it"
    )


def factorized(current: torch.nn.Module, original: torch.nn.Module, tensor: TensorSpec,
               factors: TuckerFactors, *, fold: bool) -> torch.nn.Module:
    """The module to install: a FactorizedLinear, or ``current`` experts with one more factored.

    ``current`` differs from ``original`` only for experts, when another of the same
    module's parameters was factored earlier in the same γ.
    """
    from dse.layers import FactorizedLinear
    from dse.layers_moe import FactorizedExperts

    if tensor.kind == "experts":
        module = current if isinstance(current, FactorizedExperts) else FactorizedExperts(original)
        module.set_factors(tensor.param, factors, fold=fold)
        return module
    if tensor.kind == "conv1d":
        weight = _tensor(original, "weight")
        bias = getattr(original, "bias", None)
        u1, core, u2 = (t.to(device=weight.device, dtype=weight.dtype) for t in factors)
        if (int(u1.shape[0]), int(u2.shape[0])) != tensor.shape:
            raise InvalidConfigError(f"factors {tuple(u1.shape)}, {tuple(u2.shape)} do not fit "
                                     f"a {tensor.shape[0]}×{tensor.shape[1]} Conv1D weight")
        layer = FactorizedLinear(u1, core, u2, bias, fold=fold)
        layer.requires_grad_(weight.requires_grad)
        return layer
    return FactorizedLinear.from_linear(original, factors, fold=fold)  # type: ignore[arg-type]


def factors_of(module: torch.nn.Module, tensor: TensorSpec) -> TuckerFactors:
    """The factors an installed module holds for ``tensor`` (a folded Γ comes back as I)."""
    import torch

    from dse.decompose import TuckerFactors
    from dse.layers_moe import FactorizedExperts

    if tensor.kind == "experts":
        if not isinstance(module, FactorizedExperts) or tensor.param not in module.factored:
            raise InvalidConfigError(f"experts {tensor.param!r} are not factored here")
        return module.stacked_factors(tensor.param)
    if not hasattr(module, "u1"):
        raise InvalidConfigError(f"a {type(module).__name__} holds no factors")
    u1, u2 = _tensor(module, "u1").detach(), _tensor(module, "u2").detach()
    core = getattr(module, "core", None)
    core = (torch.eye(u1.shape[1], dtype=u1.dtype, device=u1.device) if core is None
            else core.detach())
    return TuckerFactors(u1, core, u2)


def _tensor(module: torch.nn.Module, name: str) -> torch.Tensor:
    """A tensor attribute of a module, typed as one (nn.Module attributes are untyped)."""
    value = getattr(module, name)
    assert value is not None
    return cast("torch.Tensor", value)


def relative_error(weight: torch.Tensor, factors: TuckerFactors) -> float:
    """‖W − W̃‖_F / ‖W‖_F; for experts over all their matrices together (float64)."""
    import torch

    from dse import decompose
    from dse.decompose import TuckerFactors

    if weight.ndim == 2:
        return decompose.relative_error(weight, factors)
    residual = norm = 0.0
    for e in range(weight.shape[0]):
        part = TuckerFactors(factors.u1[e], factors.core[e], factors.u2[e])
        square = float(torch.linalg.vector_norm(weight[e].double()) ** 2)
        error = decompose.relative_error(weight[e], part)
        residual += (error ** 2) * square if math.isfinite(error) else math.inf
        norm += square
    if norm == 0.0:
        return 0.0 if residual == 0.0 else math.inf
    return math.sqrt(residual / norm)
