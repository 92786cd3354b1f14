"""Where a loaded model's decomposable modules sit, what they hold, and the one way to swap one.

The block list is found through the model's family adapter (``space.families``), so every
supported family works without hard-coded paths, also under task heads that prefix it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dse.surgery_report import current
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import torch

    from dse.decompose import TuckerFactors
    from dse.models import LoadedModel

__all__ = ["decomposable_paths", "count_parameters", "block_prefix", "set_module", "installed_factors"]


def decomposable_paths(loaded: LoadedModel) -> dict[tuple[int, str], str]:
    """Module path of every decomposable (layer, tensor) of this model (an experts tensor: its module)."""
    prefix = block_prefix(loaded)
    return {(layer, t.name): f"{prefix}.{layer}.{t.module}"  # experts: their module
            for layer in range(loaded.spec.n_layers) for t in loaded.spec.tensors}


def count_parameters(model: torch.nn.Module) -> int:
    """Unique parameters of ``model`` (tied weights counted once, as the spec counts them)."""
    return sum(p.numel() for p in model.parameters())


def block_prefix(loaded: LoadedModel) -> str:
    """Module path of the block list in *this* model, found through the family adapter."""
    from space.families import FAMILIES

    spec = loaded.spec
    family = FAMILIES.get(spec.family)
    path, blocks = family.locate_layers(loaded.model)
    if len(blocks) != spec.n_layers:
        raise InvalidConfigError(
            f"{loaded.name}: found {len(blocks)} blocks at {path!r}, but its spec has "
            f"{spec.n_layers} layers"
        )
    return path


def set_module(model: torch.nn.Module, path: str, module: torch.nn.Module) -> None:
    """Put ``module`` at dotted ``path`` of ``model`` (the one place modules are swapped)."""
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, module)



def installed_factors(loaded: LoadedModel) -> dict[tuple[int, str], TuckerFactors]:
    """The factors of the installed γ, per ``(layer, tensor)``, as the model holds them."""
    report = current(loaded)
    if report is None:
        return {}
    from dse import adapters

    prefix = block_prefix(loaded)
    out = {}
    for result in report.per_tensor:
        tensor = loaded.spec.tensor(result.tensor)
        path = f"{prefix}.{result.layer}.{tensor.module}"
        if result.method == "activation":
            raise InvalidConfigError(f"{loaded.name}: {path!r} is decomposed at run time "
                                     f"(method activation); it holds no factors to save")
        try:
            out[(result.layer, result.tensor)] = adapters.factors_of(
                loaded.model.get_submodule(path), tensor)
        except InvalidConfigError:
            raise InvalidConfigError(
                f"{loaded.name}: {path!r} was changed outside dse.surgery") from None
    return out
