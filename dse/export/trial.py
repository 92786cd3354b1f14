"""Save the model of a study's trial (the best feasible one by default) as a loadable directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from space.errors import InvalidConfigError

if TYPE_CHECKING:
    from dse.study.api import StudyHandle

__all__ = ["trial_row", "save_trial_model"]


def trial_row(handle: StudyHandle, number: int | None) -> dict[str, Any]:
    """The stored row of trial ``number``, or of the best feasible trial when None.

    Raises:
        InvalidConfigError: no such trial, no feasible trial yet, or a trial without a
            measured γ (rejected by the rules, failed, still running).
    """
    if number is None:
        row = handle.best()
        if row is None:
            raise InvalidConfigError(
                f"{handle.name} has no feasible trial yet (accuracy drop < τ = {handle.definition.tau:g} pp); "
                f"pass --trial N to save another one"
            )
        return row
    rows = {r["number"]: r for r in handle.trials()}
    if number not in rows:
        raise InvalidConfigError(f"{handle.name} has no trial {number}; trials are 0..{max(rows, default=-1)}")
    row = rows[number]
    if row.get("rejected") or not (row.get("gamma") or {}).get("layers") or row.get("state") != "COMPLETE":
        raise InvalidConfigError(
            f"trial {number} of {handle.name} has no measured γ to save (state {row.get('state')}"
            f"{', rejected by the rules' if row.get('rejected') else ''})"
        )
    return row


def save_trial_model(handle: StudyHandle, out_dir: str | os.PathLike[str], *, number: int | None = None,
                     device: str = "cpu") -> tuple[dict[str, Any], Path]:
    """Decompose the study's model by a trial's γ and save it with :func:`dse.saving.save_decomposed`.

    The model, dtype and method are the study's; factors come from the factor cache,
    so they are the ones the trial was measured with.

    Returns:
        The trial's row and the directory written.
    """
    from dse.cache import FactorCache
    from dse.models import load_model
    from dse.saving import check_writable, save_decomposed
    from dse.surgery import gamma_from_canonical

    row = trial_row(handle, number)
    check_writable(out_dir)
    definition = handle.definition
    loaded = load_model(definition.model, device=device, dtype=definition.dtype)
    gamma = gamma_from_canonical(row["gamma"])
    out = save_decomposed(loaded, gamma, out_dir, cache=FactorCache.for_cache_dir(None),
                          method=definition.evaluation.method)
    return row, out
