"""The Python API of studies, mirroring ``dse study``: for notebooks and scripts.

>>> import dse
>>> study = dse.run_study("studies/smollm2-quick.toml", n_trials=3)   # doctest: +SKIP
>>> study.best()["gamma_label"], study.pareto_front(x="param_reduction_pct", y="accuracy_drop_pp")  # doctest: +SKIP
>>> dse.load_study("smollm2-quick", storage="sqlite:///dse.db").export("csv")  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from dse.study.definition import StudyDefinition, load_definition
from dse.study.feasibility import Rule
from dse.study.goals import GOALS, Goal
from dse.study.lifecycle import (
    BASELINE_ATTR,
    SEEDS_ATTR,
    EvaluatorFactory,
    default_evaluator_factory,
    ensure_baseline,
    open_existing,
    prepare,
    study_names,
)
from dse.study.memo import EngineTables
from dse.study.processes import run_workers
from dse.study.queries import best_row, counts, export_text, pareto_rows, trial_rows
from dse.study.storage import StorageTarget, check_storage, open_optuna_storage
from dse.study.worker import WorkerStats
from space.errors import InvalidConfigError, StorageError

if TYPE_CHECKING:
    import optuna

__all__ = ["StudyHandle", "run_study", "resume_study", "load_study", "list_studies", "resolve_definition"]


@dataclass
class StudyHandle:
    """A stored study: its definition, baseline, trials and every query on them."""

    study: optuna.Study
    definition: StudyDefinition
    target: StorageTarget
    run_stats: WorkerStats | None = None
    plot_paths: list[Path] = field(default_factory=list)
    created: bool = False

    @property
    def name(self) -> str:
        return self.definition.study_name

    @property
    def goal(self) -> Goal:
        return GOALS.get(self.definition.objective)

    @property
    def baseline(self) -> dict[str, Any] | None:
        """The original model's measurement (without per-document results)."""
        return self.study.user_attrs.get(BASELINE_ATTR)

    @property
    def paper_seeds(self) -> dict[str, Any]:
        return dict(self.study.user_attrs.get(SEEDS_ATTR, {}))

    @property
    def rule(self) -> Rule:
        """The current definition's decision rule: stored trials are judged against it."""
        from dse.study.runner import measurement_settings

        ev = self.definition.evaluation
        return Rule(tau=self.definition.tau, mode=ev.feasibility, confidence=ev.confidence,
                    accuracy_key=measurement_settings(self.definition).accuracy_key())

    def trials(self, *, include_rejected: bool = True, states: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
        """Every trial as a row (the ``export`` JSON objects), by number, judged under the current definition."""
        rows = trial_rows(self.study, include_rejected=include_rejected, rule=self.rule)
        notes: dict[int, str] = {}
        if any(r["state"] == "FAIL" and not r.get("fail_reason") for r in rows):
            notes = _claim_notes(self.target, self.name)
        for row in rows:
            if row["state"] == "FAIL" and not row.get("fail_reason") and row["number"] in notes:
                row["fail_reason"] = notes[row["number"]]
        if states is not None:
            rows = [r for r in rows if r["state"] in states]
        return rows

    def best(self) -> dict[str, Any] | None:
        """The best feasible trial by the study's objective (None when none is feasible)."""
        return best_row(self.trials(), self.goal)

    def default_front_metrics(self) -> list[str]:
        """The goal's two metrics, or (the single objective, accuracy drop).

        A goal whose one metric *is* the accuracy drop (``budget``) pairs it with the
        parameter reduction: how compression papers plot their trade-off.
        """
        metrics = list(self.goal.metrics)
        if metrics == ["accuracy_drop_pp"]:
            return ["param_reduction_pct", "accuracy_drop_pp"]
        if len(metrics) == 1:
            metrics.append("accuracy_drop_pp")
        return metrics

    def pareto_front(self, x: str | None = None, y: str | None = None, z: str | None = None, *,
                     feasible_only: bool = True) -> list[dict[str, Any]]:
        """Non-dominated trials over two or three recorded metrics (feasible only by default)."""
        if x is None and y is None and z is None:
            metrics = self.default_front_metrics()
        else:
            metrics = [m for m in (x, y, z) if m is not None]
        return pareto_rows(self.trials(), metrics, feasible_only=feasible_only)

    def counts(self) -> dict[str, int]:
        return counts(self.trials())

    def export(self, fmt: str = "json", path: str | Path | None = None) -> str:
        """Every trial as JSON or CSV text; also written to ``path`` when given."""
        text = export_text(self.trials(), fmt)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def plot(self, out_dir: str | Path, *, fmt: str = "png", dpi: int | None = None) -> list[Path]:
        """Write the study's figures (``fmt``: png, pdf or svg) into ``out_dir``; returns their paths."""
        from dse.study.plots import DEFAULT_DPI, caption_line, optuna_figures, write_plots

        rows = self.trials()
        caption = caption_line(self.definition, rows)
        resolution = DEFAULT_DPI if dpi is None else dpi
        paths = write_plots(rows, out_dir, tau=self.definition.tau, goal=self.goal, baseline=self.baseline,
                            title=self.name, fmt=fmt, dpi=resolution, caption=caption)
        self.plot_paths = paths + optuna_figures(self.study, self.goal, out_dir, fmt=fmt, dpi=resolution,
                                                 caption=caption)
        return self.plot_paths

    def summary(self) -> dict[str, Any]:
        """What ``dse study show`` prints: definition, baseline, counts, best feasible."""
        return {
            "name": self.name,
            "storage": self.target.display(),
            "definition": self.definition.model_dump(mode="json"),
            "baseline": self.baseline,
            "counts": self.counts(),
            "best": self.best(),
            "paper_seeds": self.paper_seeds,
            "history": self.study.user_attrs.get("dse:history", []),
        }


def _storage_fault(target: StorageTarget, exc: BaseException) -> StorageError:
    """A database or disk failure during a run as one line (the trial is recorded FAIL or recovered later)."""
    import errno

    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    full = (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "disk is full" in first.lower() \
        or "no space left" in first.lower()
    hint = ("the disk is full: free space and run `dse study resume`; stored trials are intact and the running "
            "one is recovered" if full else "stored trials are intact; `dse study resume` continues")
    return StorageError(f"study storage {target.display()!r} failed during the run ({first}); {hint}")


def _claim_notes(target: StorageTarget, name: str) -> dict[int, str]:
    """Why claims ended (e.g. a stale worker), read without creating or writing anything."""
    try:
        tables = EngineTables(target, create=False)
    except StorageError:
        return {}
    try:
        return tables.budget.notes(name)
    except SQLAlchemyError:  # a database from before these tables: no notes to show
        return {}
    finally:
        tables.close()


def resolve_definition(source: StudyDefinition | str | Path | None, **overrides: Any) -> StudyDefinition:
    """A definition from an object, a TOML path or nothing (flags alone), with overrides."""
    if source is None:
        definition = StudyDefinition()
    elif isinstance(source, StudyDefinition):
        definition = source
    else:
        definition = load_definition(source)
    return definition.with_overrides(**overrides)


def _plots_dir(definition: StudyDefinition, plots: bool | str | Path) -> Path | None:
    if plots is False:
        return None
    if plots is True:
        return Path(definition.plots_dir or Path("plots") / definition.study_name)
    return Path(plots)


def _execute(definition: StudyDefinition, *, force: bool, resume_only: bool, more_trials: int | None,
             evaluator_factory: EvaluatorFactory | None, progress: bool, plots: bool | str | Path) -> StudyHandle:
    prepared = prepare(definition, force=force, resume_only=resume_only, more_trials=more_trials)
    name = definition.study_name
    try:
        budget = prepared.tables.budget
        target, claimed = budget.pool(name, prepared.pool)
        stats = WorkerStats(stopped_by="nothing to do")
        if claimed < target or budget.running(name, prepared.pool):
            factory = evaluator_factory or default_evaluator_factory
            evaluator = factory(definition, progress=progress)
            baseline = ensure_baseline(prepared, evaluator)
            stats = run_workers(prepared, evaluator, baseline, factory=evaluator_factory, progress=progress)
    except (SQLAlchemyError, OSError) as exc:
        raise _storage_fault(prepared.target, exc) from None
    finally:
        prepared.tables.close()
    handle = StudyHandle(study=prepared.study, definition=definition, target=prepared.target,
                         run_stats=stats, created=prepared.created)
    out = _plots_dir(definition, plots)
    if out is not None:
        handle.plot(out)
    return handle


def run_study(definition: StudyDefinition | str | Path | None = None, *, force: bool = False,
              evaluator_factory: EvaluatorFactory | None = None, progress: bool = True,
              plots: bool | str | Path = True, **overrides: Any) -> StudyHandle:
    """Run a study, or resume it when it already exists with the same definition.

    Args:
        definition: a :class:`StudyDefinition`, a study TOML file, or None (defaults and
            ``overrides`` alone).
        force: continue an existing study whose definition changed.
        evaluator_factory: ``factory(definition, progress=bool) -> Evaluator``; the default
            loads the model and measures with :class:`dse.evaluation.Evaluator`. A picklable
            (module-level) factory also serves the spawned ``workers``.
        progress: show progress bars.
        plots: True writes the figures to ``plots_dir`` (default ``plots/<name>``), a path
            writes them there, False writes none.
        **overrides: study settings as CLI flags give them (``model``, ``tasks``,
            ``limit``, ``tau``, ``n_trials``, ``timeout``, ``storage``, ``seed``,
            ``workers``, ``name``, ``sampler``, ``encoding``, …); None means not given.

    Raises:
        DseError: bad definition, storage or space, or a changed definition without force.
    """
    resolved = resolve_definition(definition, **overrides)
    return _execute(resolved, force=force, resume_only=False, more_trials=None,
                    evaluator_factory=evaluator_factory, progress=progress, plots=plots)


def resume_study(name: str, *, storage: str | None = None, n_trials: int | None = None,
                 timeout: float | None = None, workers: int | None = None,
                 evaluator_factory: EvaluatorFactory | None = None, progress: bool = True,
                 plots: bool | str | Path = True) -> StudyHandle:
    """Continue a stored study with its stored definition.

    Args:
        name: the stored study's name.
        storage: its database URL (default: the definition's default storage).
        n_trials: run this many more trials; without it the study continues to the
            ``n_trials`` it was defined with.
        timeout: stop after this many seconds.
        workers: worker processes (default: as defined).
        evaluator_factory: builds the evaluator (tests pass fakes); None means the real one.
        progress: show a progress bar.
        plots: write plots at the end (True: beside the database; a path: there).
    """
    if n_trials is not None and n_trials < 1:
        raise InvalidConfigError(f"--n-trials must be at least 1, got {n_trials}")
    target = check_storage(storage, create=False)
    _, stored = open_existing(name, target)
    definition = stored.with_overrides(storage=target.url, timeout=timeout, workers=workers)
    return _execute(definition, force=False, resume_only=True, more_trials=n_trials,
                    evaluator_factory=evaluator_factory, progress=progress, plots=plots)


def load_study(name: str, *, storage: str | None = None) -> StudyHandle:
    """Open a stored study for queries; never writes to the database.

    Raises:
        StorageError: the storage is malformed or (SQLite) missing.
        UnknownNameError: no study ``name``; the message lists the existing ones.
    """
    target = check_storage(storage, create=False, write=False)
    study, definition = open_existing(name, target)
    definition = definition.with_overrides(storage=target.url)
    return StudyHandle(study=study, definition=definition, target=target)


def list_studies(*, storage: str | None = None) -> list[dict[str, Any]]:
    """One summary per lowrank-dse study in ``storage``: name, model, objective, τ, counts, best."""
    target = check_storage(storage, create=False, write=False)
    optuna_storage = open_optuna_storage(target, create=False)
    out = []
    for name in study_names(optuna_storage):
        handle = load_study(name, storage=target.url)
        best = handle.best()
        metric = handle.goal.metrics[0]
        out.append({
            "name": name,
            "model": handle.definition.model,
            "objective": handle.definition.objective,
            "tau": handle.definition.tau,
            "counts": handle.counts(),
            "best_gamma": best["gamma_label"] if best else None,
            f"best_{metric}": best.get(metric) if best else None,
        })
    return out
