"""γ and its calibration from a user's arguments (CLI strings or Python values), before any measurement.

``dse decompose``, ``dse generate`` and :func:`dse.evaluate` take γ the same way
(``layers``/``tensors`` and ``rank`` or ``keep``, a method), so they share these two steps.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from space.config import KEEP_CONVENTION

if TYPE_CHECKING:
    from dse.calibration import CalibrationSettings
    from dse.models import LoadedModel
    from space.config import DecompositionConfig

__all__ = ["gamma_for", "gamma_for_model", "prepare_calibration", "KEEP_CONVENTION"]


def gamma_for(layers: str | Sequence[int], tensors: str | Sequence[str], rank: int | None, keep: float | None,
              n_layers: int | None = None, method: str = "svd") -> DecompositionConfig:
    """γ from the user's layers, tensors and rank or keep; ``"all"`` layers needs ``n_layers`` (known after loading).

    A method other than ``svd`` is part of γ, so γ alone says which form is installed and
    counted (two factors for keep ratios and the calibrated methods).
    """
    from space.config import DecompositionConfig, parse_int_list, parse_tensor_list
    from space.errors import InvalidConfigError

    if keep is not None and rank is not None:
        raise InvalidConfigError("--keep and --rank are exclusive: give a kept-parameter ratio "
                                 "or an absolute rank")
    if keep is not None and not 0.0 < keep <= 1.0:
        raise InvalidConfigError(f"--keep must be in (0, 1] ({KEEP_CONVENTION}), got {keep}")
    if rank is not None and rank < 1:
        raise InvalidConfigError(f"--rank must be at least 1, got {rank}")
    layer_text = layers if isinstance(layers, str) else ",".join(str(x) for x in layers)
    tensor_text = tensors if isinstance(tensors, str) else ",".join(tensors)
    if layer_text.strip().lower() == "all":
        chosen: tuple[int, ...] = tuple(range(n_layers)) if n_layers is not None else ()
    else:
        chosen = parse_int_list(layer_text)
    named = None if method == "svd" else method
    if keep is not None:
        return DecompositionConfig(layers=chosen, tensors=parse_tensor_list(tensor_text), rank=None,
                                   keep=keep, method=named)
    return DecompositionConfig(layers=chosen, tensors=parse_tensor_list(tensor_text), rank=rank or 1,
                               method=named)


def gamma_for_model(model: str, layers: str | Sequence[int], tensors: str | Sequence[str], rank: int | None,
                    keep: float | None, method: str = "svd",
                    gamma: DecompositionConfig | None = None) -> DecompositionConfig:
    """γ (given, or from the user's arguments) checked against ``model``'s config before its weights load.

    The spec comes from the config alone (:func:`dse.models.model_spec`), so a layer out of
    range or an unusable model name is one line at once, not after a ~20 s load.
    """
    from dse.models import model_spec

    if gamma is None:  # the arguments' own errors come before the model's
        gamma_for(layers, tensors, rank, keep, n_layers=1, method=method)
    spec = model_spec(model)
    if gamma is None:
        gamma = gamma_for(layers, tensors, rank, keep, n_layers=spec.n_layers, method=method)
    gamma.validate_for(spec)
    return gamma


def prepare_calibration(loaded: LoadedModel, gamma: DecompositionConfig, method: str,
                        settings: CalibrationSettings, *, cache_dir: str | None,
                        progress: bool) -> None:
    """Load or collect the calibration when γ uses a calibrated method (stored on ``loaded``)."""
    from dse.calibration_store import load_or_collect
    from dse.methods import CALIBRATED_METHODS

    used = {gamma.method_for(t, method, layer) for layer in gamma.layers for t in gamma.tensor_names(loaded.spec)}
    if gamma.is_identity or not used & CALIBRATED_METHODS:
        return
    calibration, collected = load_or_collect(loaded, settings, cache_dir=cache_dir,
                                             progress=progress)
    loaded.calibration = calibration
    if progress and not collected:
        print(f"calibration: {calibration.tokens} tokens, read from the cache", file=sys.stderr)
