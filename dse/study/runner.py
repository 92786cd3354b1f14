"""The optimize loop: claim a trial slot, ask Optuna for γ, check it, measure it, tell.

A study run goes through these steps (``run_study`` in :mod:`dse.study.api` calls them):

1. Check the definition, the search space (rules that leave nothing say so) and the
   storage URL; nothing is written before all three pass.
2. Create the study, or open it and refuse a changed definition (``--force`` accepts
   it). A new study stores its definition, enqueues the paper's Table IV
   configurations scaled to the model, and gets its trial budget.
3. Load the model, take the baseline from the memo tables or measure it (once per model
   fingerprint and settings), store it in the study.
4. Run workers (this process and ``workers − 1`` more). Each worker repeats: reap stale
   claims → claim a slot of the budget → ``study.ask()`` → suggest γ → reject it
   before measuring if a rule excludes it → answer it from the memo or evaluate it →
   set the accuracy-drop constraint and the measurements → ``study.tell()``.

Why our own loop and not ``study.optimize``: a rejected γ must not count as a trial
of the budget, a trial slot must be taken atomically across processes and machines
(``optimize(n_trials=...)`` counts per process), and a dead worker's RUNNING trial must
be found by a heartbeat that works with ask-and-tell (Optuna's own heartbeat is tied to
``optimize``).
"""

from __future__ import annotations

import functools
import logging
import math
import multiprocessing
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dse.study.dashboard import gamma_attrs, name_objectives, record_constraint
from dse.study.definition import StudyDefinition, definition_diff
from dse.study.encoding import (
    Encoding,
    RejectedGamma,
    SearchSpace,
    build_search_space,
    check_gamma,
    make_encoding,
    paper_configs,
)
from dse.study.feasibility import constraint_for
from dse.study.goals import (
    GOALS,
    REJECTED_CONSTRAINT,
    Goal,
    standin_ratios,
)
from dse.study.memo import Claim, EngineTables, worker_owner
from dse.study.samplers import make_sampler
from dse.study.storage import StorageTarget, check_storage, open_optuna_storage, retrying
from space.config import DecompositionConfig
from space.errors import DseError, InvalidConfigError, UnknownNameError

if TYPE_CHECKING:
    import optuna

    from dse.evaluation import BaselineRecord, Evaluator, MeasurementSettings
    from space.spec import ModelSpec

__all__ = [
    "DEFINITION_ATTR",
    "BASELINE_ATTR",
    "EvaluatorFactory",
    "default_evaluator_factory",
    "measurement_settings",
    "Prepared",
    "prepare",
    "open_existing",
    "study_names",
    "WorkerStats",
    "run_workers",
    "MAX_REJECTIONS_IN_A_ROW",
]

logger = logging.getLogger("dse.study")

DEFINITION_ATTR = "dse:definition"
BASELINE_ATTR = "dse:baseline"
SEEDS_ATTR = "dse:paper_seeds"
HISTORY_ATTR = "dse:history"
# The full encoding may propose γ after γ that the rules exclude; give up after this many.
MAX_REJECTIONS_IN_A_ROW = 2000

EvaluatorFactory = Callable[..., "Evaluator"]


def measurement_settings(definition: StudyDefinition) -> MeasurementSettings:
    """The evaluator's settings from a study definition."""
    from dse.evaluation import MeasurementSettings

    ev = definition.evaluation
    return MeasurementSettings(
        tasks=ev.tasks, limit=ev.limit, batch_size=ev.batch_size, data_dir=ev.data_dir,
        aggregate=ev.aggregate, workload=definition.workload, measure_latency=ev.measure_latency,
        measure_energy=ev.measure_energy, measure_memory=ev.measure_memory, chunk_size=ev.chunk_size,
        confidence=ev.confidence, method=ev.method, device=definition.device,
        calibration=calibration_key(definition),
        feasibility=ev.feasibility, max_limit=ev.max_limit, document_order=ev.document_order,
        document_seed=ev.document_seed, threads=ev.threads, ratio_width=ev.ratio_width, max_repeats=ev.max_repeats,
    )


def calibration_key(definition: StudyDefinition) -> str | None:
    """What the calibrated methods' factors depend on besides the model (keys the memo)."""
    settings = definition.calibration_settings
    if settings is None:
        return None
    import hashlib

    digest = hashlib.sha256(settings.source_path().read_bytes()).hexdigest()[:16]
    return f"{digest}/{settings.model_dump_json()}"


def default_evaluator_factory(definition: StudyDefinition, *, progress: bool = True) -> Evaluator:
    """Load the definition's model and wrap it in an :class:`~dse.evaluation.Evaluator`."""
    from dse.evaluation import Evaluator
    from dse.models import load_model

    loaded = load_model(definition.model, device=definition.device, dtype=definition.dtype)
    calibration = definition.calibration_settings
    if calibration is not None:  # once per (model, settings), shared by every worker
        from dse.calibration_store import load_or_collect

        loaded.calibration, _ = load_or_collect(loaded, calibration, progress=progress)
    from dse.study.spectra import register

    register(loaded)  # the spectrum encoding reads this model's weights, not a second copy
    return Evaluator(loaded, measurement_settings(definition), progress=progress)


# ---- opening and creating -------------------------------------------------------------


def _quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """Names of the lowrank-dse studies in ``storage``, sorted."""
    import optuna

    summaries = retrying(lambda: optuna.get_all_study_summaries(storage, include_best_trial=False))
    return sorted(s.study_name for s in summaries if DEFINITION_ATTR in s.user_attrs)


def open_existing(name: str, target: StorageTarget) -> tuple[optuna.Study, StudyDefinition]:
    """Load study ``name`` and its stored definition.

    Raises:
        UnknownNameError: no such study; the message lists the studies that exist.
    """
    import optuna

    _quiet_optuna()
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
    study: optuna.Study
    tables: EngineTables
    space: SearchSpace
    encoding: Encoding
    goal: Goal
    created: bool
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
    return spec, space, make_encoding(definition.search.encoding, space)


def search_space_for(spec: ModelSpec, definition: StudyDefinition) -> SearchSpace:
    """The search space a definition's rules, bounds, methods and budget leave in ``spec``."""
    search = definition.search
    return build_search_space(
        spec, definition.rules, min_layers=search.min_layers, max_layers=search.max_layers,
        max_rank=search.max_rank, methods=definition.methods, keep_min=search.keep_min,
        min_reduction_pct=definition.min_param_reduction_pct, model=definition.model)


def prepare(definition: StudyDefinition, *, force: bool = False, resume_only: bool = False,
            more_trials: int | None = None) -> Prepared:
    """Check, then create or open the study (steps 1–2 of the module docstring).

    Args:
        definition: the study; for ``resume`` the stored one.
        force: accept a changed definition of an existing study.
        resume_only: the study must exist (``dse study resume``).
        more_trials: run this many more trials than claimed so far (``resume --n-trials``);
            otherwise the budget is the definition's ``n_trials`` in total.

    Raises:
        DseError: a bad definition, storage or search space (nothing is written), an
            unknown study (resume), or a changed definition without ``force``.
    """
    import optuna

    _quiet_optuna()
    _, space, encoding = check_definition(definition)
    goal = GOALS.get(definition.objective)
    target = check_storage(definition.storage, create=not resume_only)
    name = definition.study_name
    if resume_only:
        study, stored = open_existing(name, target)
        storage = study._storage
    else:
        storage = open_optuna_storage(target)
        stored = None
        if name in retrying(lambda: optuna.get_all_study_names(storage)):
            study = retrying(lambda: optuna.load_study(study_name=name, storage=storage))
            if DEFINITION_ATTR not in study.user_attrs:
                raise InvalidConfigError(
                    f"study {name!r} in {target.display()} was not made by lowrank-dse; choose another --name"
                )
            stored = StudyDefinition.model_validate(study.user_attrs[DEFINITION_ATTR])
    created = False
    if stored is not None:
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
        tables = EngineTables(target)
        if changes:
            history = list(study.user_attrs.get(HISTORY_ATTR, []))
            history.append({"time": time.time(), "changes": changes})
            retrying(lambda: study.set_user_attr(HISTORY_ATTR, history))
            retrying(lambda: study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json")))
        elif definition.model_dump(mode="json") != study.user_attrs[DEFINITION_ATTR] and not resume_only:
            # Budget fields (n_trials, timeout, ...) may change freely; keep the latest.
            retrying(lambda: study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json")))
        seeds = [s["label"] for s in study.user_attrs.get(SEEDS_ATTR, {}).get("enqueued", [])]
        skipped: list[str] = list(study.user_attrs.get(SEEDS_ATTR, {}).get("skipped", []))
    else:
        study = retrying(lambda: optuna.create_study(
            study_name=name, storage=storage, directions=list(goal.directions), load_if_exists=True,
        ))
        tables = EngineTables(target)
        created = True
        retrying(lambda: study.set_user_attr(DEFINITION_ATTR, definition.model_dump(mode="json")))
        taken, skipped = paper_configs(encoding, limit=definition.search.paper_seeds)
        for config in taken:
            retrying(functools.partial(
                study.enqueue_trial, config.params, user_attrs={"paper_seed": config.label}, skip_if_exists=True,
            ))
        seeds = [c.label for c in taken]
        retrying(lambda: study.set_user_attr(SEEDS_ATTR, {
            "enqueued": [{"label": c.label, "gamma": c.gamma.canonical(space.spec)} for c in taken],
            "skipped": skipped,
        }))
        for line in skipped:
            logger.info("paper seed skipped: %s", line)
    retrying(lambda: name_objectives(study, goal))
    if more_trials is not None:
        tables.set_target(name, more=more_trials)
    elif not resume_only or tables.budget(name) == (0, 0):
        tables.set_target(name, target=definition.n_trials)
    return Prepared(definition=definition, target=target, study=study, tables=tables, space=space,
                    encoding=encoding, goal=goal, created=created, seeds=seeds, skipped_seeds=skipped)


# ---- baseline ---------------------------------------------------------------------------


def baseline_summary(record: BaselineRecord) -> dict[str, Any]:
    """The baseline without its per-document results, for the study's attributes."""
    return record.model_dump(mode="json", exclude={"accuracy_measurement"})


def ensure_baseline(prepared: Prepared, evaluator: Evaluator) -> BaselineRecord:
    """The stored baseline for this model and settings, or a new measurement of it."""
    from dse.evaluation import BaselineRecord

    fingerprint = evaluator.loaded.fingerprint
    key = evaluator.settings.accuracy_key()
    stored = prepared.tables.baseline_get(fingerprint, key)
    if stored is not None:
        baseline = BaselineRecord.model_validate(stored)
    else:
        logger.info("measuring the baseline of %s", prepared.definition.model)
        baseline = evaluator.baseline()
        prepared.tables.baseline_put(fingerprint, key, baseline.model_dump(mode="json"))
    summary = baseline_summary(baseline)
    if prepared.study.user_attrs.get(BASELINE_ATTR) != summary:
        retrying(lambda: prepared.study.set_user_attr(BASELINE_ATTR, summary))
    return baseline


# ---- one worker -------------------------------------------------------------------------


@dataclass
class WorkerStats:
    """What one worker did in this run."""

    evaluated: int = 0
    memoized: int = 0
    rejected: int = 0
    early_stopped: int = 0
    failed: int = 0
    reaped: int = 0
    stopped_by: str = "budget"

    def merge(self, other: WorkerStats) -> None:
        for name in ("evaluated", "memoized", "rejected", "early_stopped", "failed", "reaped"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class _Heartbeat:
    """Refreshes a claim's heartbeat in a thread while its trial runs."""

    def __init__(self, tables: EngineTables, claim: Claim, interval: float) -> None:
        self._tables, self._claim, self._interval = tables, claim, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dse-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                if not self._tables.heartbeat(self._claim):
                    logger.warning("claim %s was found stale by another worker", self._claim.id)
                    return
            except Exception as exc:  # noqa: BLE001 - a missed beat is not fatal
                logger.debug("heartbeat failed: %s", exc)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


_REJECTED = "rejected"
_DONE = "done"


class Worker:
    """Runs trials of one prepared study with one evaluator until the budget is spent."""

    def __init__(self, prepared: Prepared, evaluator: Evaluator, baseline: BaselineRecord, *,
                 worker_index: int = 0, progress: bool = True) -> None:
        self.p = prepared
        self.evaluator = evaluator
        self.baseline = baseline
        self.worker_index = worker_index
        self.progress = progress
        self.owner = worker_owner()
        self.fingerprint = evaluator.loaded.fingerprint
        self.settings_key = evaluator.memo_key()
        self.stats = WorkerStats()
        self._bar: Any = None
        self._current: str = ""
        self.kl_screen: Any = None  # dse.screen.StudyScreen, when the definition screens
        definition = prepared.definition
        seed = definition.search.seed
        if seed is not None:
            # Distinct streams per worker and per resume, or they would propose the same γ.
            seed = seed + 7919 * worker_index + len(prepared.study.get_trials(deepcopy=False))
        prepared.study.sampler = make_sampler(
            definition.search.sampler, seed=seed, n_trials=definition.n_trials,
            n_startup_trials=definition.search.n_startup_trials, multi_objective=prepared.goal.multi_objective,
        )

    # ---- the loop -------------------------------------------------------------------

    def run(self) -> WorkerStats:
        definition = self.p.definition
        deadline = time.monotonic() + definition.timeout if definition.timeout else math.inf
        rejections = 0
        self._open_bar()
        try:
            while True:
                if time.monotonic() >= deadline:
                    self.stats.stopped_by = "timeout"
                    break
                self._reap()
                claim = self.p.tables.claim(definition.study_name, self.owner)
                if claim is None:
                    if self.p.tables.running_claims(definition.study_name) == 0:
                        break
                    # Others are still running trials: wait, and take over any that go stale.
                    self._set_status("waiting for other workers")
                    time.sleep(min(1.0, definition.heartbeat_interval))
                    continue
                outcome = self._one(claim)
                if outcome == _REJECTED:
                    rejections += 1
                    if rejections >= MAX_REJECTIONS_IN_A_ROW:
                        raise InvalidConfigError(
                            f"encoding {definition.search.encoding!r} proposed {rejections} γ in a row that the "
                            f"rules exclude; use encoding = \"gaps\", which satisfies them by construction"
                        )
                else:
                    rejections = 0
        finally:
            self._close_bar()
        return self.stats

    def _reap(self) -> None:
        from optuna.trial import TrialState

        reaped = self.p.tables.reap_stale(self.p.definition.study_name, self.p.definition.grace_seconds)
        for number in reaped:
            self.stats.reaped += 1
            if number is None:
                continue
            logger.warning("trial %d lost its worker (no heartbeat): marked FAIL, its γ queued again", number)
            try:
                retrying(functools.partial(self.p.study.tell, number, state=TrialState.FAIL, skip_if_finished=True))
            except ValueError:
                continue  # finished meanwhile
            lost = retrying(lambda: self.p.study.get_trials(deepcopy=False))
            frozen = next((t for t in lost if t.number == number), None)
            if frozen is not None:
                self._requeue(frozen.params, frozen.user_attrs, number)

    def _requeue(self, params: dict[str, Any], user_attrs: dict[str, Any], number: int) -> None:
        """Queue the γ of a trial that did not finish, so the study measures it after all."""
        attrs = {"retry_of": number}
        if user_attrs.get("paper_seed"):
            attrs["paper_seed"] = user_attrs["paper_seed"]
        # Not retried: enqueue_trial spans several transactions, so a repeat after a late lock
        # error could queue the γ twice; SQLite's busy timeout already waits for the lock.
        self.p.study.enqueue_trial(dict(params), user_attrs=attrs)

    def _one(self, claim: Claim) -> str:
        from optuna.trial import TrialState

        tables, study = self.p.tables, self.p.study
        trial = None
        try:
            # Not retried, for the same reason as enqueue_trial: ask creates the trial row and
            # then writes its parameters; repeating it could leave an orphan RUNNING trial.
            trial = study.ask()
            tables.attach(claim, trial.number)
            with _Heartbeat(tables, claim, self.p.definition.heartbeat_interval):
                outcome = self._measure(trial)
        except BaseException as exc:
            reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            self.stats.failed += 1
            if trial is not None:
                try:
                    trial.set_user_attr("fail_reason", reason[:500])
                    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
                    if isinstance(exc, KeyboardInterrupt):
                        # Not the γ's fault: the next resume measures it first.
                        self._requeue(trial.params, trial.user_attrs, trial.number)
                except BaseException as tell_exc:  # noqa: BLE001 - the original error matters more
                    logger.warning("could not mark trial %s failed: %s", trial.number, tell_exc)
            try:
                tables.release(claim, reason)
            except Exception as release_exc:  # noqa: BLE001 - stale reaping frees it later
                logger.warning("could not release claim %s: %s", claim.id, release_exc)
            raise
        if outcome == _REJECTED:
            tables.release(claim, "rejected by the rules")
        else:
            tables.finish(claim)
        self._advance()
        return outcome

    def _measure(self, trial: optuna.trial.Trial) -> str:
        from optuna.trial import TrialState

        space, definition, goal = self.p.space, self.p.definition, self.p.goal
        spec = space.spec
        started = time.perf_counter()
        gamma: DecompositionConfig | None
        try:
            gamma = suggested = self.p.encoding.suggest(trial)
            reason = check_gamma(space, suggested)
        except RejectedGamma as rejected:
            gamma, reason = None, rejected.reason
        if reason is not None:
            self._tell_rejected(trial, gamma, reason)
            return _REJECTED
        assert gamma is not None
        label = gamma.describe(spec)
        gamma_hash = gamma.hash(spec)
        self._set_status(label)
        trial.set_user_attr("gamma", gamma.canonical(spec))
        trial.set_user_attr("gamma_hash", gamma_hash)
        trial.set_user_attr("gamma_label", label)
        for key, value in gamma_attrs(gamma.canonical(spec), spec, definition.evaluation.method).items():
            trial.set_user_attr(key, value)
        # The memo gives a measurement; its decision is re-derived under this study's τ and confidence.
        entry = self.p.tables.memo_get(self.fingerprint, self.settings_key, gamma_hash, tau=None)
        rederived = None if entry is None else self.evaluator.rederive(entry.record, self.baseline, definition.tau)
        if entry is not None and rederived is not None:
            record = rederived.model_dump(mode="json")
            trial.set_user_attr("memo_study", entry.study_name)
            self.stats.memoized += 1
        else:
            entry = None
            screen = self._screen_decision(gamma) if definition.screen else None  # KL screen: dse/screen.py
            if screen is not None and screen.skip:
                from dse.screen import tell_screened
                from space.metrics import parameter_report

                reduction = parameter_report(spec, gamma).param_reduction_pct
                tell_screened(self.p.study, trial, screen, self.p.goal.metrics, reduction)
                return _DONE
            measured = self.evaluator.evaluate(gamma, self.baseline, tau=definition.tau)
            record = measured.model_dump(mode="json") | ({"kl_divergence": screen.kl} if screen else {})
            self.p.tables.memo_put(self.fingerprint, self.settings_key, record, tau=definition.tau,
                                   study_name=definition.study_name)
            self.stats.evaluated += 1
        if record.get("early_stopped"):
            self.stats.early_stopped += 1
        values, standins = goal.values(record)
        standins = {**(record.get("standins") or {}), **standins}
        constraint = constraint_for(record, definition.tau, definition.evaluation.feasibility)
        record_constraint(trial, constraint)
        for key, value in record.items():
            if key not in ("gamma", "gamma_hash", "gamma_label", "per_doc", "standins"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("memoized", entry is not None)
        trial.set_user_attr("rejected", False)
        trial.set_user_attr("feasible", constraint <= 0)
        trial.set_user_attr("tau", definition.tau)
        if standins:
            trial.set_user_attr("standins", standins)
        trial.set_user_attr("worker", self.owner)
        trial.set_user_attr("trial_seconds", time.perf_counter() - started)
        # skip_if_finished: a stalled worker whose trial was meanwhile reaped as stale (and its
        # γ queued again) must not crash on telling a finished trial; its record is memoized.
        retrying(lambda: self.p.study.tell(trial, values, state=TrialState.COMPLETE, skip_if_finished=True))
        return _DONE

    def _screen_decision(self, gamma: DecompositionConfig) -> Any:
        """The KL screen's decision for γ (dse/screen.py); built on the worker's first use."""
        from dse.screen import StudyScreen
        from space.env import resolve_data_dir

        if self.kl_screen is None:
            data_dir = resolve_data_dir(self.p.definition.evaluation.data_dir)
            if data_dir is None:
                raise InvalidConfigError("the KL screen needs the benchmark data directory (wikitext2/)")
            self.kl_screen = StudyScreen(self.evaluator, data_dir, self.p.definition.tau)
        return self.kl_screen.check(gamma, retrying(lambda: self.p.study.get_trials(deepcopy=False)))

    def _tell_rejected(self, trial: optuna.trial.Trial, gamma: DecompositionConfig | None, reason: str) -> None:
        """A γ the rules exclude: kept as COMPLETE and infeasible (the sampler learns), not measured."""
        from optuna.trial import TrialState

        from space.metrics import parameter_report

        spec = self.p.space.spec
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
        values = [estimates[m] for m in self.p.goal.metrics]
        record_constraint(trial, REJECTED_CONSTRAINT)
        trial.set_user_attr("rejected", True)
        trial.set_user_attr("reject_reason", reason)
        trial.set_user_attr("memoized", False)
        trial.set_user_attr("feasible", False)
        trial.set_user_attr("param_reduction_pct", reduction)
        retrying(lambda: self.p.study.tell(trial, values, state=TrialState.COMPLETE, skip_if_finished=True))
        self.stats.rejected += 1

    # ---- progress -------------------------------------------------------------------

    def _open_bar(self) -> None:
        if not self.progress:
            return
        from space.progress import progress_bar as tqdm

        target, _ = self.p.tables.budget(self.p.definition.study_name)
        done = self.p.tables.claim_counts(self.p.definition.study_name).get("done", 0)
        self._bar = tqdm(total=target, initial=done, desc=self.p.definition.study_name, unit="trial",
                         dynamic_ncols=True)
        self._bar.set_postfix_str(self._postfix())

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _set_status(self, label: str) -> None:
        self._current = label
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=True)

    def _advance(self) -> None:
        if self._bar is None:
            return
        target, _ = self.p.tables.budget(self.p.definition.study_name)
        done = self.p.tables.claim_counts(self.p.definition.study_name).get("done", 0)
        self._bar.total = target
        self._bar.n = done
        self._bar.set_postfix_str(self._postfix(), refresh=False)
        self._bar.refresh()

    def _postfix(self) -> str:
        from dse.study.queries import best_row, trial_rows

        rows = trial_rows(self.p.study)
        best = best_row(rows, self.p.goal)
        metric = self.p.goal.metrics[0]
        if best is None or best.get(metric) is None:
            best_text = "none yet"
        else:
            best_text = f"{best[metric]:.3f} ({best['gamma_label']})"
        current = f"now {self._current} · " if self._current else ""
        return f"{current}best feasible {metric}: {best_text}"


# ---- several workers --------------------------------------------------------------------


def _child_worker(definition_json: str, force: bool, worker_index: int,
                  factory: EvaluatorFactory | None) -> None:
    """Entry point of a spawned worker process (quiet: the parent shows progress)."""
    import json

    from dse.evaluation import BaselineRecord
    from space.quiet import library_warnings_once

    library_warnings_once()

    definition = StudyDefinition.model_validate(json.loads(definition_json))
    prepared = prepare(definition, force=True, resume_only=True, more_trials=None)
    evaluator = (factory or default_evaluator_factory)(definition, progress=False)
    stored = prepared.tables.baseline_get(evaluator.loaded.fingerprint, evaluator.settings.accuracy_key())
    assert stored is not None, "the parent measures the baseline before starting workers"
    Worker(prepared, evaluator, BaselineRecord.model_validate(stored), worker_index=worker_index,
           progress=False).run()


def run_workers(prepared: Prepared, evaluator: Evaluator, baseline: BaselineRecord, *,
                factory: EvaluatorFactory | None = None, progress: bool = True) -> WorkerStats:
    """Run this process's worker and ``workers − 1`` spawned ones until the budget is spent.

    Ctrl-C reaches every worker of the terminal's process group: each marks its own
    running trial FAIL and stops; this process waits for them before re-raising.
    """
    definition = prepared.definition
    children: list[multiprocessing.process.BaseProcess] = []
    if definition.workers > 1:
        context = multiprocessing.get_context("spawn")
        for index in range(1, definition.workers):
            child = context.Process(
                target=_child_worker, args=(definition.to_json(), True, index, factory),
                name=f"dse-worker-{index}",
            )
            child.start()
            children.append(child)
    try:
        stats = Worker(prepared, evaluator, baseline, worker_index=0, progress=progress).run()
    except BaseException:
        # Ctrl-C reached the children too; give them time to fail their own trials.
        for process in children:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()  # its trial goes stale and is taken over on resume
                process.join()
        raise
    for process in children:
        process.join()
    failed = [c for c in children if c.exitcode not in (0, None)]
    if failed:
        codes = ", ".join(f"{c.name} exit {c.exitcode}" for c in failed)
        raise DseError(f"{len(failed)} worker process(es) failed ({codes}); their errors are printed above")
    return stats
