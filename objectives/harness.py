"""lm-eval plumbing: its task manager over our YAMLs, quiet logs and bars, the model as an lm-eval LM.

What :mod:`objectives.accuracy` (and :mod:`objectives.fast_lm`) need from
lm-evaluation-harness beyond its evaluator, in one place: lm-eval and ``datasets`` are
imported here only when first used, and ``datasets``' cache stays in ours.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from objectives.base import EvalTarget
from objectives.fast_lm_prefix import PrefixStore
from objectives.tasks import DATA_DIR_KEY, TASKS_DIR
from space.env import cache_dir

__all__ = [
    "lm_eval_version",
    "prepare_datasets_cache",
    "quiet_lm_eval",
    "silent_hflm_class",
    "task_manager",
    "wrapped_lm",
]


def lm_eval_version() -> str:
    """The installed lm-eval's version: part of the key under which a baseline is stored."""
    from importlib.metadata import version

    return version("lm_eval")


def prepare_datasets_cache() -> None:
    """Keep ``datasets``' Arrow cache in the project's cache directory, not ~/.cache."""
    default = str(cache_dir() / "datasets")
    if "HF_DATASETS_CACHE" in os.environ:
        return
    os.environ["HF_DATASETS_CACHE"] = default
    if "datasets" in sys.modules:  # imported before us: its config already read the env
        import datasets

        datasets.config.HF_DATASETS_CACHE = Path(default)


@contextlib.contextmanager
def quiet_lm_eval() -> Iterator[None]:
    """Silence lm-eval's info/warning logs and its per-call progress bars.

    NOTE: lm-eval's ``Task.build_all_requests`` draws a tqdm bar with no switch to turn it
    off; we swap the module's ``tqdm`` for a disabled one while our calls run, so the
    only bar is ours, which names the task.
    """
    import lm_eval.api.task as task_module
    from tqdm import tqdm

    logger = logging.getLogger("lm_eval")
    level = logger.level
    original_tqdm = task_module.tqdm
    logger.setLevel(logging.ERROR)
    task_module.tqdm = functools.partial(tqdm, disable=True)
    try:
        yield
    finally:
        task_module.tqdm = original_tqdm
        logger.setLevel(level)


@functools.lru_cache(maxsize=4)
def task_manager(data_dir: str | None, with_hub: bool) -> Any:
    """lm-eval's TaskManager over our YAMLs, plus its built-in index only when a hub task is asked for."""
    prepare_datasets_cache()
    from lm_eval.tasks import TaskManager

    metadata = {DATA_DIR_KEY: data_dir} if data_dir else None
    with quiet_lm_eval():
        return TaskManager(include_path=str(TASKS_DIR), include_defaults=with_hub, metadata=metadata)


@functools.lru_cache(maxsize=1)
def silent_hflm_class() -> type:
    """HFLM whose request loops draw no bars of their own (ours names the task instead)."""
    from lm_eval.models.huggingface import HFLM

    class _SilentHFLM(HFLM):  # type: ignore[misc]  # lm-eval is untyped
        def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            results: list[Any] = super().loglikelihood(requests, disable_tqdm=True)
            return results

        def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            results: list[Any] = super().loglikelihood_rolling(requests, disable_tqdm=True)
            return results

        def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[Any]:
            results: list[Any] = super().generate_until(requests, disable_tqdm=True)
            return results

    return _SilentHFLM


@contextlib.contextmanager
def wrapped_lm(
    target: EvalTarget,
    batch_size: int,
    *,
    fast: bool = False,
    token_budget: int | None = None,
    prefix_store: PrefixStore | None = None,
) -> Iterator[Any]:
    """The target as an lm-eval LM; restores every module's training flag afterwards.

    HFLM puts the model in eval mode (and re-ties the embeddings, a no-op for a loaded
    model); the objective contract says the model leaves as it came. ``fast`` wraps it in
    :mod:`objectives.fast_lm`'s shared-context LM instead (same tokenization and results).
    """
    modes = [(module, module.training) for module in target.model.modules()]
    try:
        with quiet_lm_eval():
            if fast:
                from objectives.fast_lm import DEFAULT_TOKEN_BUDGET, fast_lm_class

                lm = fast_lm_class()(
                    pretrained=target.model, tokenizer=target.tokenizer, batch_size=batch_size,
                    token_budget=token_budget or DEFAULT_TOKEN_BUDGET, prefix_store=prefix_store,
                    fingerprint=str(target.info.get("fingerprint", "")),
                )
            else:
                lm = silent_hflm_class()(pretrained=target.model, tokenizer=target.tokenizer, batch_size=batch_size)
        yield lm
    finally:
        for module, training in modes:
            module.training = training
