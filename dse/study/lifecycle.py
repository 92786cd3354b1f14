"""A study's life before its workers start: check, create or open, measure the baseline.

1. Check the definition, the search space (rules that leave nothing say so) and the
   storage URL; nothing is written before all three pass.
2. Create the study, or open it and refuse a changed definition (``--force`` accepts
   it). A new study stores its definition, enqueues the paper's Table IV
   configurations scaled to the model, and gets its trial budget. Creation is idempotent
   across processes: the first to insert the study's row in ``dse_studies`` creates it,
   the others wait until it is ready (a creator that died is taken over after the grace
   period), so N processes starting at once on a fresh database make one study.
3. Load the model, take the baseline from the baseline store or measure it
   (:mod:`dse.study.measuring`, re-exported here).

Steps 1–2 sit together because they are the checks and writes before any worker starts,
in their order.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dse.study.claims import TOTAL_POOL
from dse.study.dashboard import name_objectives
from dse.study.definition import StudyDefinition, definition_diff
from dse.study.encoding import ENCODINGS, Encoding, make_encoding, paper_configs
from dse.study.goals import GOALS, Goal
from dse.study.measuring import (
    BASELINE_ATTR,
    EvaluatorFactory,
    baseline_summary,
    calibration_key,
    default_evaluator_factory,
    ensure_baseline,
    measurement_settings,
)
from dse.study.memo import EngineTables, worker_owner
from dse.study.search_space import SearchSpace, build_search_space, check_budget_reachable
from dse.study.storage import StorageTarget, check_storage, open_optuna_storage, retrying
from space.errors import InvalidConfigError, StorageError, UnknownNameError

if TYPE_CHECKING:
    import optuna

    from space.spec import ModelSpec

__all__ = [
    "DEFINITION_ATTR", "BASELINE_ATTR", "SEEDS_ATTR", "HISTORY_ATTR", "EvaluatorFactory", "Prepared",
    "measurement_settings", "calibration_key", "search_space_for", "default_evaluator_factory", "study_names",
    "open_existing", "check_definition", "prepare", "ensure_baseline", "baseline_summary",
]

logger = logging.getLogger("dse.study")

DEFINITION_ATTR = "dse:definition"
SEEDS_ATTR = "dse:paper_seeds"
HISTORY_ATTR = "dse:history"
# How long a process waits for another one that is creating the same study.
CREATION_WAIT = 300.0

def quiet_optuna() -> None:
    """Optuna's INFO lines and experimental warnings are noise in the CLI."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Our workers run Optuna's heartbeat around ask-and-tell themselves (dse.study.worker).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the lowrank-dse studies in ``storage``, sorted."""
    import optuna

    summaries = retrying(lambda: optuna.get_all_study_summaries(storage, include_best_trial=False))
    return sorted(s.study_name for s in summaries if DEFINITION_ATTR in s.user_attrs)


def open_existing(name: str, target: StorageTarget) -> tuple[optuna.Study, StudyDefinition]:
    """Load study ``name`` and its stored definition, reading only.

    Raises:
        UnknownNameError: no such study; the message lists the studies that exist.
    """
    import optuna

    quiet_optuna()
    storage = open_optuna_storage(target, create=False)
    names = study_names(storage)
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise UnknownNameError(f"unknown study {name!r} in {target.display()}; studies there: {known}")
    study = retrying(lambda: optuna.load_study(study_name=name, storage=storage))
    definition = StudyDefinition.model_validate(study.user_attrs[DEFINITION_ATTR])
    return study, definition


@dataclass
class Prepared:
    """A study ready for workers: everything checked, the study created or opened."""

    definition: StudyDefinition
    target: StorageTarget
    storage: optuna.storages.RDBStorage
    study: optuna.Study
    tables: EngineTables
    space: SearchSpace
    encoding: Encoding
    goal: Goal
    created: bool
    pool: str = TOTAL_POOL
    seeds: list[str] = field(default_factory=list)
    skipped_seeds: list[str] = field(default_factory=list)


def check_definition(definition: StudyDefinition) -> tuple[ModelSpec, SearchSpace, Encoding]:
    """Everything about a definition that can be checked without a database or a model.

    Unknown models, tasks, a missing data directory or benchmark file, a CUDA device on a
    machine without one, and rules that leave nothing to search all fail here, before a
    database is opened.
    """
    from objectives.accuracy import AccuracyObjective
    from objectives.workload import check_device
    from space.presets import load_spec

    spec = load_spec(definition.model)
    space = search_space_for(spec, definition)
    ev = definition.evaluation
    AccuracyObjective(ev.tasks, limit=ev.limit, batch_size=ev.batch_size, data_dir=ev.data_dir, show_progress=False)
    check_device(definition.device)
    encoding = make_encoding(definition.search.encoding, space)
    check_budget_reachable(space, keep_ratios=encoding.keeps_ratios)
    return spec, space, encoding


def search_space_for(spec: ModelSpec, definition: StudyDefinition) -> SearchSpace:
    """The search space a definition's rules, bounds, methods and budget leave in ``spec``."""
    search = definition.search
    return build_search_space(
        spec, definition.rules, min_layers=search.min_layers, max_layers=search.max_layers,
        max_rank=search.max_rank, methods=definition.methods, keep_min=search.keep_min,
        min_reduction_pct=definition.min_param_reduction_pct, model=definition.model,
        mixes_deletions=ENCODINGS.get(search.encoding).mixes_deletions, rank_one_method=search.rank_one_method)


def _create(storage: optuna.storages.RDBStorage, tables: EngineTables, definition: StudyDefinition,
            space: SearchSpace, encoding: Encoding, goal: Goal) -> None:
    """Create the study (this process holds its ``dse_studies`` row); safe to repeat after a crash."""
    import optuna

    name = definition.study_name
    study = retrying(lambda: optuna.create_study(
        study_name=name, storage=storage, directions=list(goal.directions), load_if_exists=True,
    ))
    retrying(lambda: study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json")))
    taken, skipped = paper_configs(encoding, limit=definition.search.paper_seeds)
    for config in taken:
        # skip_if_exists: a creator taking over from a dead one does not queue a seed twice.
        retrying(functools.partial(study.enqueue_trial, config.params, user_attrs={"paper_seed": config.label},
                                   skip_if_exists=True))
    retrying(lambda: study.set_user_attr(SEEDS_ATTR, {
        "enqueued": [{"label": c.label, "gamma": c.gamma.canonical(space.spec)} for c in taken],
        "skipped": skipped,
    }))
    for line in skipped:
        logger.info("paper seed skipped: %s", line)
    tables.budget.set_total(name, definition.n_trials)
    tables.budget.studies.mark_ready(name)


def _open_or_create(storage: optuna.storages.RDBStorage, tables: EngineTables, target: StorageTarget,
                    definition: StudyDefinition, space: SearchSpace, encoding: Encoding, goal: Goal, *,
                    resume_only: bool) -> bool:
    """Make sure the study exists and is ready; True when this process created it."""
    import optuna

    name = definition.study_name
    owner = worker_owner()
    deadline = time.monotonic() + CREATION_WAIT
    while True:
        exists = name in retrying(lambda: optuna.get_all_study_names(storage))
        state = tables.budget.studies.creation_state(name)
        if exists:
            study = retrying(lambda: optuna.load_study(study_name=name, storage=storage))
            if state != "pending":
                if DEFINITION_ATTR not in study.user_attrs:
                    raise InvalidConfigError(
                        f"study {name!r} in {target.display()} was not made by lowrank-dse; choose another --name"
                    )
                tables.budget.studies.mark_ready(name)  # also a study made before dse_studies existed
                return False
        elif state == "ready" or (resume_only and state is None):
            # Deleted from Optuna's tables, or never made: resume lists what exists; run starts anew.
            if resume_only:
                open_existing(name, target)  # raises UnknownNameError listing the studies there
            tables.budget.studies.forget(name)
            continue
        step = tables.budget.studies.begin_creation(name, owner, stale_after=definition.grace_seconds)
        if step == "create":
            _create(storage, tables, definition, space, encoding, goal)
            return True
        if step == "wait":
            if time.monotonic() > deadline:
                raise StorageError(f"study {name!r} in {target.display()} is still being created by another "
                                   f"process after {CREATION_WAIT:.0f} s")
            time.sleep(0.2)


def prepare(definition: StudyDefinition, *, force: bool = False, resume_only: bool = False,
            more_trials: int | None = None, pool: str | None = None) -> Prepared:
    """Check, then create or open the study (steps 1–2 of the module docstring).

    Args:
        definition: the study; for ``resume`` the stored one.
        force: accept a changed definition of an existing study.
        resume_only: the study must exist (``dse study resume``).
        more_trials: open a new budget pool of this many trials (``resume --n-trials``);
            otherwise the pool is the definition's ``n_trials`` in total.
        pool: join this existing pool (a spawned worker of the process that opened it).

    Raises:
        DseError: a bad definition, storage or search space (nothing is written), an
            unknown study (resume), or a changed definition without ``force``.
    """
    import optuna

    quiet_optuna()
    _, space, encoding = check_definition(definition)
    goal = GOALS.get(definition.objective)
    target = check_storage(definition.storage, create=not resume_only)
    name = definition.study_name
    storage = open_optuna_storage(target, heartbeat_interval=definition.heartbeat_interval,
                                  grace_period=definition.grace_seconds)
    tables = EngineTables(target)
    try:
        created = _open_or_create(storage, tables, target, definition, space, encoding, goal,
                                  resume_only=resume_only)
        study = retrying(lambda: optuna.load_study(study_name=name, storage=storage))
        stored = StudyDefinition.model_validate(study.user_attrs[DEFINITION_ATTR])
        if not created:
            _accept_definition(study, stored, definition, force=force, resume_only=resume_only)
            done_before = [t.number for t in retrying(lambda: study.get_trials(deepcopy=False))
                           if t.state.name == "COMPLETE" and not t.user_attrs.get("rejected")]
            if resume_only:
                if tables.budget.pool(name, TOTAL_POOL) == (0, 0):
                    tables.budget.set_total(name, stored.n_trials, done_before=done_before)
            else:
                tables.budget.set_total(name, definition.n_trials, done_before=done_before)
        retrying(lambda: name_objectives(study, goal))  # optuna-dashboard shows the metric names
        if pool is None:
            pool = tables.budget.open_pool(name, more_trials) if more_trials is not None else TOTAL_POOL
    except BaseException:
        tables.close()
        raise
    seeds_attr = study.user_attrs.get(SEEDS_ATTR, {})
    return Prepared(definition=definition, target=target, storage=storage, study=study, tables=tables,
                    space=space, encoding=encoding, goal=goal, created=created, pool=pool,
                    seeds=[s["label"] for s in seeds_attr.get("enqueued", [])],
                    skipped_seeds=list(seeds_attr.get("skipped", [])))


def _accept_definition(study: optuna.Study, stored: StudyDefinition, definition: StudyDefinition, *,
                       force: bool, resume_only: bool) -> None:
    """Refuse a changed definition unless ``force``; record the change in the study's history."""
    name = definition.study_name
    changes = definition_diff(stored.identity(), definition.identity())
    if changes:
        if stored.objective != definition.objective:
            raise InvalidConfigError(
                f"study {name!r} optimizes {stored.objective!r}, not {definition.objective!r}: an existing "
                f"study's objective cannot change; choose another --name"
            )
        if not force:
            raise InvalidConfigError(
                f"study {name!r} exists with another definition: {'; '.join(changes)} "
                f"(pass --force to continue with the new one, or choose another --name)"
            )
        history = list(study.user_attrs.get(HISTORY_ATTR, []))
        history.append({"time": time.time(), "changes": changes})
        retrying(lambda: study.set_user_attr(HISTORY_ATTR, history))
        retrying(lambda: study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json")))
    elif definition.model_dump(mode="json") != study.user_attrs[DEFINITION_ATTR] and not resume_only:
        # Budget fields (n_trials, timeout, ...) may change freely; keep the latest.
        retrying(lambda: study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json")))
