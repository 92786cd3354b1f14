"""lm-eval's standard task names and their local ``dse_*`` copies.

Each ``dse_*`` task is lm-eval's YAML of the same benchmark (same prompts, same split)
reading the benchmark file from the data directory instead of the Hugging Face hub.
Offline (``HF_HUB_OFFLINE`` or ``HF_DATASETS_OFFLINE`` set), a standard name cannot
load, so it is replaced by its local copy with a one-line note; online it goes to the
hub as asked, and if loading it fails the error names the local copy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

__all__ = ["STANDARD_TO_LOCAL", "offline", "local_copy", "resolve_offline"]

logger = logging.getLogger("dse")

STANDARD_TO_LOCAL: dict[str, str] = {
    "arc_easy": "dse_arc_easy",
    "arc_challenge": "dse_arc_challenge",
    "boolq": "dse_boolq",
    "hellaswag": "dse_hellaswag",
    "lambada_openai": "dse_lambada",
    "piqa": "dse_piqa",
    "truthfulqa_mc1": "dse_truthfulqa_mc1",
    "truthfulqa_mc2": "dse_truthfulqa_mc2",
    "winogrande": "dse_winogrande",
    "mmlu": "dse_mmlu",
}
_TRUE = {"1", "true", "yes", "on"}


def offline() -> bool:
    """Whether the Hugging Face libraries are told to stay offline."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def local_copy(name: str) -> str | None:
    """The ``dse_*`` task that copies lm-eval's task ``name``, if there is one."""
    return STANDARD_TO_LOCAL.get(name)


def resolve_offline(names: Sequence[str]) -> list[str]:
    """Offline, standard names become their local copies (each with a one-line note)."""
    if not offline():
        return list(names)
    resolved = []
    for name in names:
        local = local_copy(name)
        if local is not None:
            logger.warning("note: offline, task %r runs as its local copy %r (same lm-eval prompts, "
                           "benchmark file from the data directory)", name, local)
        resolved.append(local or name)
    return resolved
