"""What optuna-dashboard needs from a study, written by the engine and served by ``dse study dashboard``.

optuna-dashboard (0.21) reads a trial's feasibility from the system attribute
``constraints`` (a list, Optuna's old format), while Optuna 5's ``Trial.set_constraint``
writes ``constraints:<key>``. The engine writes both (:func:`record_constraint`), so
the dashboard marks infeasible trials and Optuna's samplers and ``trial.constraints``
still see the named constraint. Objective names come from ``study.set_metric_names``
(:func:`name_objectives`), and γ is written as short user attributes
(:func:`gamma_attrs`) that name layers, tensors, rank and method.

The dashboard picks a single-objective study's best trial with
``storage.get_best_trial``, which ignores constraints, and its Pareto front ignores
them too, so plain ``optuna-dashboard URL`` marks infeasible trials but may badge one
as best. :func:`dashboard_app` (served by ``dse study dashboard``) replaces the best
trials by Optuna's own constrained choice and derives the ``constraints`` list for
studies written before the engine wrote it. It only reads the database.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import warnings
from collections.abc import Container, Mapping
from typing import TYPE_CHECKING, Any

from dse.study.goals import CONSTRAINT_KEY

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from dse.study.goals import Goal
    from space.spec import ModelSpec

__all__ = [
    "DASHBOARD_CONSTRAINTS_ATTR",
    "GAMMA_ATTR_PREFIX",
    "record_constraint",
    "name_objectives",
    "gamma_attrs",
    "feasible",
    "dashboard_storage",
    "feasible_best",
    "dashboard_app",
]

logger = logging.getLogger("dse.study")

# optuna-dashboard's key (optuna_dashboard._serializer.CONSTRAINTS_KEY).
DASHBOARD_CONSTRAINTS_ATTR = "constraints"
GAMMA_ATTR_PREFIX = "gamma."


def record_constraint(trial: optuna.trial.Trial, value: float) -> None:
    """Set the accuracy-drop constraint in both forms: Optuna 5's and the dashboard's.

    Only public Optuna API: the trial's id is looked up by study name and trial number.
    """
    trial.set_constraint(CONSTRAINT_KEY, value)
    storage = trial.storage
    study_id = storage.get_study_id_from_name(trial.study.study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    storage.set_trial_system_attr(trial_id, DASHBOARD_CONSTRAINTS_ATTR, [float(value)])


def name_objectives(study: optuna.Study, goal: Goal) -> None:
    """Store the goal's metric names (``edp_ratio``, …) so charts say what they plot."""
    import optuna

    if list(study.metric_names or []) == list(goal.metrics):
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(goal.metrics))


def gamma_attrs(gamma: Mapping[str, Any], spec: ModelSpec, method: str | None = None) -> dict[str, Any]:
    """γ as short user attributes a person can read and sort in the dashboard's table.

    Args:
        gamma: the canonical form (``DecompositionConfig.canonical``).
        spec: the model's spec, to write ``all`` when every tensor is decomposed.
        method: the decomposition method, when known.
    """
    layers = [int(x) for x in gamma.get("layers") or []]
    tensors = [str(t) for t in gamma.get("tensors") or []]
    rank = gamma.get("rank")
    attrs: dict[str, Any] = {
        f"{GAMMA_ATTR_PREFIX}layers": ",".join(str(x) for x in layers) if layers else "none",
        f"{GAMMA_ATTR_PREFIX}n_layers": len(layers),
        f"{GAMMA_ATTR_PREFIX}tensors": "all" if tensors and tensors == list(spec.tensor_names)
        else (",".join(tensors) if tensors else "none"),
    }
    if isinstance(rank, dict):
        attrs[f"{GAMMA_ATTR_PREFIX}rank"] = " ".join(f"{k}={v}" for k, v in sorted(rank.items()))
    elif rank is not None:
        attrs[f"{GAMMA_ATTR_PREFIX}rank"] = int(rank)
    for key in ("keep", "keep_ratio"):
        if gamma.get(key) is not None:
            attrs[f"{GAMMA_ATTR_PREFIX}{key}"] = gamma[key]
    if method is not None:
        attrs[f"{GAMMA_ATTR_PREFIX}method"] = method
    return attrs


def feasible(trial: FrozenTrial) -> bool:
    """Optuna's rule: every constraint ≤ 0 (a trial without constraints counts as feasible)."""
    return all(value <= 0.0 for value in trial.constraints.values())


def _with_dashboard_constraints(trial: FrozenTrial) -> FrozenTrial:
    """A copy of a trial with the dashboard's ``constraints`` list, derived when missing."""
    attrs = trial.system_attrs
    if DASHBOARD_CONSTRAINTS_ATTR in attrs:
        return trial
    named = dict(trial.constraints)
    if not named:
        return trial
    trial = copy.deepcopy(trial)
    trial.system_attrs[DASHBOARD_CONSTRAINTS_ATTR] = [float(v) for v in named.values()]
    return trial


def dashboard_storage(storage: optuna.storages.BaseStorage) -> optuna.storages.BaseStorage:
    """``storage`` whose trials carry the dashboard's ``constraints`` list, derived when missing.

    Studies written before the engine wrote that list are shown with it. The two read
    methods are replaced on this one instance (a read-only view for the dashboard); the
    class and the database are unchanged.
    """
    from optuna.trial import TrialState

    get_trial = storage.get_trial
    get_all_trials = storage.get_all_trials

    def patched_get_trial(trial_id: int) -> FrozenTrial:
        return _with_dashboard_constraints(get_trial(trial_id))

    def patched_get_all_trials(study_id: int, deepcopy: bool = True,
                               states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return [_with_dashboard_constraints(t) for t in get_all_trials(study_id, deepcopy=deepcopy, states=states)]

    storage.get_trial = patched_get_trial  # type: ignore[method-assign]
    storage.get_all_trials = patched_get_all_trials  # type: ignore[method-assign]
    return storage


def feasible_best(storage: optuna.storages.BaseStorage, study_id: int) -> list[FrozenTrial]:
    """Optuna's own best trial(s) of a study, which honour constraints; [] when none is feasible."""
    import optuna

    study = optuna.load_study(study_name=storage.get_study_name_from_id(study_id), storage=storage)
    if len(study.directions) > 1:
        return [t for t in study.best_trials if feasible(t)]
    try:
        best = study.best_trial
    except ValueError:  # no complete trial, or none feasible
        return []
    return [best] if feasible(best) else []


_STUDY_DETAIL = re.compile(r"^/api/studies/(\d+)$")


def dashboard_app(storage: optuna.storages.BaseStorage) -> Any:
    """optuna-dashboard's WSGI application, with feasible-only best trials.

    The dashboard picks a single-objective study's best with ``storage.get_best_trial``
    and a multi-objective study's front with its own Pareto filter; neither looks at
    constraints. This middleware replaces ``best_trials`` in the study-detail response
    by :func:`feasible_best` (Optuna's constrained choice), serialized as the dashboard
    serializes trials. Every other request passes through unchanged.
    """
    try:
        import optuna_dashboard
        from optuna_dashboard._serializer import serialize_frozen_trial
    except ImportError:
        from space.errors import DseError

        raise DseError("optuna-dashboard is not installed: pip install optuna-dashboard") from None
    view = dashboard_storage(storage)
    inner = optuna_dashboard.wsgi(view)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        match = _STUDY_DETAIL.match(environ.get("PATH_INFO", ""))
        if match is None or environ.get("REQUEST_METHOD", "GET") != "GET":
            return inner(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(inner(environ, capture))
        if captured["status"].startswith("200"):
            study_id = int(match.group(1))
            detail = json.loads(body)
            system_attrs = view.get_study_system_attrs(study_id)
            detail["best_trials"] = [serialize_frozen_trial(study_id, _with_dashboard_constraints(t), system_attrs)
                                     for t in feasible_best(view, study_id)]
            body = json.dumps(detail).encode()
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]

    return app
