"""lm-eval's own results and per-document sample files for a model in memory.

``dse evaluate --output-path DIR [--log-samples]`` writes, for the original and the
decomposed model, what ``lm_eval --output_path DIR [--log_samples]`` writes: a
``results_<time>.json`` in lm-eval's schema and, with samples, one
``samples_<task>_<time>.jsonl`` per task, under ``DIR/<model name>/``. They come from
lm-eval's ``simple_evaluate`` and ``EvaluationTracker`` on the same documents (the first
``limit`` of each task, zero-shot), run once more after the engine's own measurement, so
the files are lm-eval's own and any tool that reads them reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from objectives.base import EvalTarget
from objectives.tasks import DATA_DIR_KEY, TASKS_DIR, is_local_task
from space.env import resolve_data_dir
from space.errors import StorageError

__all__ = ["write_lm_eval_run"]


def write_lm_eval_run(target: EvalTarget, tasks: Sequence[str], *, label: str, out_dir: str | os.PathLike[str],
                      limit: int | None, batch_size: int, data_dir: str | os.PathLike[str] | None,
                      log_samples: bool) -> dict[str, Any]:
    """Evaluate ``target`` with lm-eval's ``simple_evaluate`` and save its files.

    Args:
        target: the model as it is now (original or decomposed).
        tasks: task names (``dse_*`` local tasks or lm-eval's own).
        label: the model name lm-eval files the run under (``DIR/<label>/``).
        out_dir: lm-eval's ``output_path``.
        limit: documents per task (None: all).
        batch_size: lm-eval's batch size.
        data_dir: the benchmark data directory of the local tasks.
        log_samples: also write the per-document samples.

    Returns:
        ``dir`` (where the files went), ``files`` (their names) and ``accuracy`` (task ->
        lm-eval's ``acc``).

    Raises:
        StorageError: ``out_dir`` cannot be written.
    """
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    out = Path(out_dir).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot write lm-eval output to {str(out)!r}: {exc.strerror or exc}") from None
    resolved = resolve_data_dir(data_dir)
    metadata = {DATA_DIR_KEY: str(resolved)} if resolved else None
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=not all(map(is_local_task, tasks)),
                          metadata=metadata)
    lm = HFLM(pretrained=target.model, tokenizer=target.tokenizer, batch_size=batch_size)
    tracker = EvaluationTracker(output_path=str(out))
    before = {p for p in out.rglob("*") if p.is_file()}
    results = simple_evaluate(model=lm, model_args=f"pretrained={label}", tasks=list(tasks), task_manager=manager,
                              limit=limit, num_fewshot=0, log_samples=log_samples, evaluation_tracker=tracker,
                              bootstrap_iters=0)
    samples = results.pop("samples", None) if log_samples else None
    try:
        tracker.save_results_aggregated(results=results, samples=samples)
        if log_samples and samples is not None:
            for task_name in results["configs"]:
                tracker.save_results_samples(task_name=task_name, samples=samples[task_name])
    except OSError as exc:
        raise StorageError(f"cannot write lm-eval output to {str(out)!r}: {exc.strerror or exc}") from None
    written = sorted(p for p in out.rglob("*") if p.is_file() and p not in before)
    accuracy = {task: float(values["acc,none"]) for task, values in results["results"].items() if "acc,none" in values}
    return {"dir": str(written[0].parent) if written else str(out), "files": [p.name for p in written],
            "accuracy": accuracy}
