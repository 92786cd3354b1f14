"""A γ the rules exclude: told to Optuna as COMPLETE and infeasible, never measured.

Telling it (rather than failing it) lets the sampler learn to avoid that region; its
objective values are the stand-in ratios of its parameter reduction with a 100 pp
accuracy drop, and its claim is released (:mod:`dse.study.reaper`), so it does not count
toward the trial budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from dse.study.dashboard import gamma_attrs, record_constraint
from dse.study.goals import REJECTED_CONSTRAINT, standin_ratios
from dse.study.storage import retrying
from space.errors import InvalidConfigError

if TYPE_CHECKING:
    import optuna

    from space.config import DecompositionConfig
    from space.spec import ModelSpec

__all__ = ["tell_rejected"]


def tell_rejected(study: optuna.Study, trial: optuna.trial.Trial, spec: ModelSpec, metrics: Sequence[str],
                  gamma: DecompositionConfig | None, reason: str) -> None:
    """Record ``trial`` (γ, or None when it could not be built) as rejected for ``reason``."""
    from optuna.trial import TrialState

    from space.metrics import parameter_report

    reduction = 0.0
    if gamma is not None:
        try:
            reduction = parameter_report(spec, gamma).param_reduction_pct
            trial.set_user_attr("gamma", gamma.canonical(spec))
            trial.set_user_attr("gamma_hash", gamma.hash(spec))
            trial.set_user_attr("gamma_label", gamma.describe(spec))
            for key, value in gamma_attrs(gamma.canonical(spec), spec).items():
                trial.set_user_attr(key, value)
        except InvalidConfigError:
            pass
    estimates = standin_ratios(reduction) | {"param_reduction_pct": reduction, "accuracy_drop_pp": 100.0}
    values = [estimates[m] for m in metrics]
    record_constraint(trial, REJECTED_CONSTRAINT)
    trial.set_user_attr("rejected", True)
    trial.set_user_attr("reject_reason", reason)
    trial.set_user_attr("memoized", False)
    trial.set_user_attr("feasible", False)
    trial.set_user_attr("param_reduction_pct", reduction)
    retrying(lambda: study.tell(trial, values, state=TrialState.COMPLETE, skip_if_finished=True))
