"""Accuracy: lm-evaluation-harness run in-process on the loaded (possibly decomposed) model.

The model is wrapped in lm-eval's ``HFLM`` as it is, never reloaded, and scored zero-shot
with lm-eval's own request building and metrics (``lm_eval.evaluator.evaluate``). Two
kinds of task names:

- ``dse_*``: the local tasks in :mod:`objectives.tasks`, reading the benchmark files in
  the data directory; they need no network (``HF_HUB_OFFLINE=1`` and
  ``HF_DATASETS_OFFLINE=1`` are fine) and index in milliseconds.
- anything else: lm-eval's standard tasks, whose datasets come from the Hugging Face
  hub. Only then is lm-eval's full index of ~14,700 tasks built (~12 s, once per process).

Documents and their order
    Every task evaluates a fixed list of documents: the first ``limit`` of its file (all
    when ``limit`` is None), in file order, as lm-eval's own ``limit`` does; or, with
    ``order_seed``, the first ``limit`` of a seeded shuffle of the file, so chunks are
    exchangeable samples (what the sequential decisions of studies need). A group
    (``dse_mmlu``) applies ``limit`` to each subtask, as lm-eval does, and orders its
    documents round-robin over its subtasks in alphabetical order (document 0 of every
    subject, then document 1, ...), so any prefix of a group's documents samples every
    subject. ``per_doc`` follows that order, and so do the chunks of
    :meth:`AccuracyObjective.measure_chunked`: a run stopped early has evaluated a prefix.

Accuracy
    The task's ``acc`` metric (lm-eval's first metric where a hub task has no ``acc``):
    per document 0/1 (TruthfulQA MC2: the probability mass of the true answers), and the
    task's accuracy is their mean. For ``dse_mmlu`` that is lm-eval's group aggregate,
    which weights subjects by size (``weight_by_size: True``). The measurement's
    ``accuracy`` is the unweighted mean over the requested tasks.

lm-eval's plumbing (task manager, quiet bars, the model as an LM) is in
:mod:`objectives.harness`; checking the tasks and data and planning each task's documents
in :mod:`objectives.accuracy_tasks`; the records in :mod:`objectives.accuracy_records`.
What stays here is the objective: scoring the planned documents, whole or in chunks.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from objectives.accuracy_records import AccuracyMeasurement, TaskAccuracy
from objectives.accuracy_tasks import TaskPlan, check_tasks, load_plans
from objectives.base import EvalTarget, Objective
from objectives.fast_lm_prefix import PrefixStore
from objectives.harness import lm_eval_version, quiet_lm_eval, wrapped_lm
from objectives.tasks import task_list
from objectives.tasks.aliases import resolve_offline
from space.env import resolve_data_dir
from space.errors import InvalidConfigError

__all__ = [
    "AccuracyMeasurement",
    "AccuracyObjective",
    "TaskAccuracy",
    "lm_eval_version",
]

# Documents per task per lm-eval call: large enough that lm-eval's request sorting and
# batching work as in one call, small enough for a progress bar that moves.
PIECE_DOCS = 256


# --------------------------------------------------------------------------- objective


class AccuracyObjective(Objective):
    """Zero-shot accuracy on lm-eval tasks, with per-document results for paired drops.

    The task objects (documents, prompts) are built on the first ``measure`` and reused
    by every later one, so a study pays for reading the benchmark files once. Like every
    objective it never modifies the model.

    Args:
        tasks: task names: ``dse_*`` local tasks, or lm-eval hub task names.
        limit: documents per task (per subtask for a group): the first ``limit``; None
            for all.
        batch_size: lm-eval's batch size (requests per forward pass) where lm-eval's own
            ``HFLM`` scores (``fast=False``, and requests the fast path leaves to it).
        fast: score with :mod:`objectives.fast_lm` (each document's context computed once,
            token-budget batches); per-document results equal ``HFLM``'s (log-likelihoods
            within float rounding), in a fraction of the time.
        token_budget: tokens per forward pass on the fast path (None: its default).
        prefix_reuse: on the fast path, keep hidden states entering the layers a later
            model state shares (the undecomposed prefix of a γ) and start there.
        data_dir: the benchmark data directory (``--data-dir``); else ``$DSE_DATA_DIR``,
            else ``../shared/data`` beside the checkout.
        show_progress: draw a tqdm bar naming the task being evaluated.
        order_seed: evaluate each task's documents in an order shuffled with this seed
            (the first ``limit`` of it); None keeps file order.

    Raises:
        InvalidConfigError: no tasks, a task twice, ``limit`` or ``batch_size`` below 1.
        UnknownNameError: a ``dse_*`` name that is not a local task, or another name that
            is not one of lm-eval's tasks.
        DataError: no data directory, or a local task's file is missing from it.
    """

    name = "accuracy"

    def __init__(
        self,
        tasks: Sequence[str],
        *,
        limit: int | None = None,
        batch_size: int = 16,
        data_dir: str | os.PathLike[str] | None = None,
        show_progress: bool = True,
        fast: bool = True,
        token_budget: int | None = None,
        prefix_reuse: bool = True,
        order_seed: int | None = None,
    ) -> None:
        # Offline, lm-eval's standard names run as their local copies (then checked again for twins).
        names = task_list(resolve_offline(task_list(tasks)))
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidConfigError(f"limit must be a positive number of documents per task or None, got {limit!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if token_budget is not None and (
            isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 1
        ):
            raise InvalidConfigError(f"token_budget must be a positive number of tokens or None, got {token_budget!r}")

        self.tasks: tuple[str, ...] = tuple(names)
        self.limit = limit
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.order_seed = order_seed
        self.fast = fast
        self.token_budget = token_budget
        self.prefix_store: PrefixStore | None = PrefixStore() if fast and prefix_reuse else None
        # Per task, per evaluated document: its requests' log-likelihoods (the last measurement),
        # for comparing scoring paths (benchmarks/bench_trial.py).
        self.last_loglikelihoods: dict[str, list[list[float]]] = {}
        self.data_dir: Path | None = resolve_data_dir(data_dir)
        check_tasks(names, self.data_dir)
        self._plans: list[TaskPlan] | None = None

    # ------------------------------------------------------------------ public

    def documents(self) -> dict[str, list[tuple[str, int]]]:
        """Each task's documents as (lm-eval task, index in its file), in ``per_doc`` order.

        Reads the benchmark files on the first call (as the first ``measure`` would).
        """
        return {plan.name: list(plan.order) for plan in self._load_plans()}

    def planned_docs(self) -> dict[str, int]:
        """How many documents each task evaluates in a complete measurement."""
        return {plan.name: len(plan.order) for plan in self._load_plans()}

    def measure(self, target: EvalTarget) -> AccuracyMeasurement:
        """Evaluate every planned document of every task (called once per trial)."""
        return self.measure_chunked(target, chunk_size=sys.maxsize)

    def measure_chunked(
        self,
        target: EvalTarget,
        *,
        chunk_size: int,
        should_stop: Callable[[AccuracyMeasurement], bool] | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> AccuracyMeasurement:
        """Evaluate the same documents as :meth:`measure`, ``chunk_size`` per task at a time.

        Chunk k holds documents ``k*chunk_size`` to ``(k+1)*chunk_size - 1`` of every task
        (in each task's fixed order), so after each chunk every task has evaluated a
        prefix of its documents. ``should_stop`` then sees the running measurement
        (``complete=False`` until the last chunk); when it returns True evaluation stops
        and that partial measurement is returned. Per-document results do not depend on
        the chunking.

        Args:
            target: the model to measure.
            chunk_size: documents per task per chunk.
            should_stop: called after each chunk but the last with the running measurement.
            progress: called as ``progress(task, done, planned)`` when a task starts a
                chunk and after every piece of at most 256 of its documents, with that
                task's documents done and planned; it replaces the built-in bar.

        Raises:
            InvalidConfigError: ``chunk_size`` below 1.
            DataError: a task's data could not be loaded (e.g. a hub task offline).
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise InvalidConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
        started = time.perf_counter()
        plans = self._load_plans()
        results: dict[str, list[float]] = {plan.name: [] for plan in plans}
        self.last_loglikelihoods = {plan.name: [] for plan in plans}
        longest = max(len(plan.order) for plan in plans)
        from lm_eval.evaluator import evaluate

        from space.progress import progress_bar as tqdm

        bar = tqdm(
            total=sum(len(plan.order) for plan in plans),
            unit="doc",
            desc="accuracy",
            disable=not self.show_progress or progress is not None,
            leave=False,
        )
        try:
            with wrapped_lm(
                target, self.batch_size, fast=self.fast, token_budget=self.token_budget,
                prefix_store=self.prefix_store,
            ) as lm:
                for start in range(0, longest, chunk_size):
                    for plan in plans:
                        window = plan.order[start : start + chunk_size]
                        if not window:
                            continue
                        bar.set_description(f"accuracy {plan.name}")
                        if progress is not None:
                            progress(plan.name, len(results[plan.name]), len(plan.order))
                        for first in range(0, len(window), PIECE_DOCS):
                            piece = window[first : first + PIECE_DOCS]
                            results[plan.name].extend(self._evaluate_window(evaluate, lm, plan, piece))
                            bar.update(len(piece))
                            if progress is not None:
                                progress(plan.name, len(results[plan.name]), len(plan.order))
                    if start + chunk_size < longest and should_stop is not None:
                        partial = self._measurement(plans, results, started)
                        if should_stop(partial):
                            return partial
        finally:
            bar.close()
        return self._measurement(plans, results, started)

    # ------------------------------------------------------------------ internals

    def _load_plans(self) -> list[TaskPlan]:
        if self._plans is None:
            self._plans = load_plans(self.tasks, self.data_dir, limit=self.limit, order_seed=self.order_seed)
        return self._plans

    def _evaluate_window(
        self, evaluate: Callable[..., Any], lm: Any, plan: TaskPlan, window: list[tuple[str, int]]
    ) -> list[float]:
        """One lm-eval call on ``window``'s documents; their metric values in window order."""
        samples: dict[str, list[int]] = {}
        for leaf, index in window:
            samples.setdefault(leaf, []).append(index)
        for indices in samples.values():
            indices.sort()  # lm-eval maps results back to indices assuming ascending order
        task_dict = {"tasks": {leaf: plan.leaves[leaf] for leaf in samples}, "groups": {}}
        with quiet_lm_eval():
            output = evaluate(
                lm=lm, task_dict=task_dict, samples=samples, bootstrap_iters=0, log_samples=True
            )
        values: dict[tuple[str, int], float] = {}
        loglikelihoods: dict[tuple[str, int], list[float]] = {}
        for leaf, examples in output["samples"].items():
            first_filter = examples[0]["filter"] if examples else None
            for example in examples:
                if example["filter"] == first_filter:
                    values[(leaf, int(example["doc_id"]))] = float(example[plan.metric])
                    loglikelihoods[(leaf, int(example["doc_id"]))] = [
                        float(resp[0][0] if isinstance(resp[0], tuple | list) else resp[0])
                        for resp in example["resps"]
                    ]
        self.last_loglikelihoods[plan.name].extend(loglikelihoods[key] for key in window)
        return [values[key] for key in window]

    def _measurement(
        self, plans: list[TaskPlan], results: dict[str, list[float]], started: float
    ) -> AccuracyMeasurement:
        per_task = {}
        for plan in plans:
            per_doc = results[plan.name]
            per_task[plan.name] = TaskAccuracy(
                task=plan.name,
                metric=plan.metric,
                accuracy=sum(per_doc) / len(per_doc) if per_doc else 0.0,
                n_docs=len(per_doc),
                n_planned=len(plan.order),
                per_doc=list(per_doc),
            )
        accuracies = [entry.accuracy for entry in per_task.values()]
        return AccuracyMeasurement(
            per_task=per_task,
            accuracy=sum(accuracies) / len(accuracies),
            complete=all(entry.n_docs == entry.n_planned for entry in per_task.values()),
            n_docs_total=sum(entry.n_docs for entry in per_task.values()),
            limit=self.limit,
            seconds=time.perf_counter() - started,
            lm_eval_version=lm_eval_version(),
        )


