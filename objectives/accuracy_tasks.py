"""The tasks of an accuracy measurement before any scoring: names and data checked, documents planned.

A requested task is checked once, when the objective is built (a local ``dse_*`` name
and its files, or one of lm-eval's names), so bad input is one line before a model is
touched; its plan (lm-eval's task objects and the fixed order of its documents, see
:mod:`objectives.accuracy`) is built on the first measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objectives.harness import quiet_lm_eval, task_manager
from objectives.tasks import LOCAL_TASKS, is_local_task, local_task_names, missing_files
from objectives.tasks.aliases import local_copy
from space.errors import DataError, UnknownNameError

__all__ = ["TaskPlan", "check_tasks", "document_order", "load_plans", "pick_metric"]

_PREFERRED_METRIC = "acc"
_FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed


def check_tasks(names: Sequence[str], data_dir: Path | None) -> None:
    """Refuse an unknown task name, a missing data directory or a local task's missing file.

    Raises:
        UnknownNameError: a ``dse_*`` name that is not a local task, or another name that
            is not one of lm-eval's tasks.
        DataError: no data directory, or a local task's file is missing from it.
    """
    local = [n for n in names if is_local_task(n)]
    for name in local:
        if name not in LOCAL_TASKS:
            raise UnknownNameError(_unknown_local_message(name))
    if local:
        _check_data(local, data_dir)
    hub = [n for n in names if not is_local_task(n)]
    if hub:
        _check_hub_names(hub, data_dir)


@dataclass
class TaskPlan:
    """What one requested task evaluates: its leaf tasks and its documents in order."""

    name: str
    metric: str
    leaves: dict[str, Any]  # leaf name -> lm-eval Task
    order: list[tuple[str, int]]  # (leaf, document index), the per_doc order


def pick_metric(task: Any) -> str:
    """The task's ``acc``, else lm-eval's first metric for it."""
    metrics = list(task.aggregation())
    if not metrics:
        raise DataError(f"lm-eval task {task.config.task!r} reports no metric")
    return _PREFERRED_METRIC if _PREFERRED_METRIC in metrics else metrics[0]


def document_order(
    leaves: dict[str, Any], limit: int | None, seed: int | None = None
) -> list[tuple[str, int]]:
    """Round-robin over leaves in name order, each capped at ``limit`` (a single leaf: file order).

    With ``seed``, each leaf's documents are first shuffled by a generator seeded with
    (seed, leaf), so the first ``limit`` are a random sample and any prefix is too.
    """
    import random

    orders = {}
    for name, task in leaves.items():
        indices = list(range(len(task.eval_docs)))
        if seed is not None:
            random.Random(f"{seed}:{name}").shuffle(indices)
        orders[name] = indices if limit is None else indices[:limit]
    longest = max((len(o) for o in orders.values()), default=0)
    return [(name, orders[name][i]) for i in range(longest) for name in sorted(leaves) if i < len(orders[name])]


def load_plans(tasks: Sequence[str], data_dir: Path | None, *, limit: int | None,
               order_seed: int | None) -> list[TaskPlan]:
    """Build each task with lm-eval (zero-shot, its fixed fewshot seed) and fix its documents."""
    hub = any(not is_local_task(name) for name in tasks)
    manager = task_manager(str(data_dir) if data_dir else None, hub)
    plans = []
    for name in tasks:
        try:
            with quiet_lm_eval():
                loaded = manager.load([name])
        except DataError:
            raise
        except Exception as exc:  # lm-eval / datasets raise many kinds; re-raised as DataError
            where = "the data directory" if is_local_task(name) else "the Hugging Face hub (offline?)"
            copy = local_copy(name)
            hint = f"; its local copy {copy!r} needs no hub" if copy else ""
            raise DataError(f"task {name!r} could not be loaded from {where}{hint}: "
                            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        leaves = dict(loaded["tasks"])
        for leaf in leaves.values():
            if leaf.get_config("num_fewshot") is None:
                leaf.set_config(key="num_fewshot", value=0)
            leaf.set_fewshot_seed(seed=_FEWSHOT_SEED)
        metric = pick_metric(next(iter(leaves.values())))
        order = document_order(leaves, limit, order_seed)
        plans.append(TaskPlan(name=name, metric=metric, leaves=leaves, order=order))
    return plans



def _unknown_local_message(name: str) -> str:
    import difflib

    known = local_task_names()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return (
        f"unknown local task {name!r}.{hint} Local tasks: {', '.join(known)}; "
        "other names go to lm-eval's standard tasks, which need the Hugging Face hub"
    )


def _check_data(local: list[str], data_dir: Path | None) -> Path:
    if data_dir is None:
        raise DataError(
            f"local task(s) {', '.join(local)} need the benchmark data directory: pass --data-dir, "
            "set DSE_DATA_DIR, or place the data in ../shared/data beside the checkout"
        )
    if not data_dir.is_dir():
        raise DataError(f"benchmark data directory {data_dir} does not exist or is not a directory")
    for name in local:
        missing = missing_files(name, data_dir)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise DataError(f"task {name!r} needs {shown}, missing from the data directory {data_dir}")
    return data_dir


def _check_hub_names(names: Sequence[str], data_dir: Path | None) -> None:
    import difflib

    manager = task_manager(str(data_dir) if data_dir else None, True)
    known = manager.all_tasks
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, [*local_task_names(), *known], n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown task {name!r}: not a local task ({', '.join(local_task_names())}) and not one of "
                f"lm-eval's {len(known)} tasks (those need the Hugging Face hub).{hint}"
            )
