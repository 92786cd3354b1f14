"""The local lm-eval tasks: ``dse_*`` YAMLs that read the benchmark files in the data directory.

The YAMLs beside this file are static. They name a ``custom_dataset`` reader in
:mod:`objectives.tasks.loaders`, which finds the data directory in the task metadata
key ``dse_data_dir`` (set by :class:`objectives.accuracy.AccuracyObjective` through
``TaskManager(metadata=...)``), else through :func:`space.env.resolve_data_dir`. Each
reader returns the documents in the schema of the Hugging Face dataset that lm-eval's
standard task reads, so the prompts are lm-eval's own templates, copied verbatim.

This module is the catalogue: which local tasks exist, which files each needs, and how
many documents the full files hold. It imports nothing heavy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from space.errors import InvalidConfigError

__all__ = [
    "DATA_DIR_KEY",
    "LOCAL_TASKS",
    "MMLU_SUBJECTS",
    "TASKS_DIR",
    "LocalTask",
    "is_local_task",
    "local_task_names",
    "missing_files",
    "task_list",
]

TASKS_DIR = Path(__file__).resolve().parent
DATA_DIR_KEY = "dse_data_dir"

# Subject -> category, as in lm-eval's tasks/mmlu/_generate_configs.py.
MMLU_SUBJECTS: dict[str, str] = {
    "abstract_algebra": "stem",
    "anatomy": "stem",
    "astronomy": "stem",
    "business_ethics": "other",
    "clinical_knowledge": "other",
    "college_biology": "stem",
    "college_chemistry": "stem",
    "college_computer_science": "stem",
    "college_mathematics": "stem",
    "college_medicine": "other",
    "college_physics": "stem",
    "computer_security": "stem",
    "conceptual_physics": "stem",
    "econometrics": "social_sciences",
    "electrical_engineering": "stem",
    "elementary_mathematics": "stem",
    "formal_logic": "humanities",
    "global_facts": "other",
    "high_school_biology": "stem",
    "high_school_chemistry": "stem",
    "high_school_computer_science": "stem",
    "high_school_european_history": "humanities",
    "high_school_geography": "social_sciences",
    "high_school_government_and_politics": "social_sciences",
    "high_school_macroeconomics": "social_sciences",
    "high_school_mathematics": "stem",
    "high_school_microeconomics": "social_sciences",
    "high_school_physics": "stem",
    "high_school_psychology": "social_sciences",
    "high_school_statistics": "stem",
    "high_school_us_history": "humanities",
    "high_school_world_history": "humanities",
    "human_aging": "other",
    "human_sexuality": "social_sciences",
    "international_law": "humanities",
    "jurisprudence": "humanities",
    "logical_fallacies": "humanities",
    "machine_learning": "stem",
    "management": "other",
    "marketing": "other",
    "medical_genetics": "other",
    "miscellaneous": "other",
    "moral_disputes": "humanities",
    "moral_scenarios": "humanities",
    "nutrition": "other",
    "philosophy": "humanities",
    "prehistory": "humanities",
    "professional_accounting": "other",
    "professional_law": "humanities",
    "professional_medicine": "other",
    "professional_psychology": "social_sciences",
    "public_relations": "social_sciences",
    "security_studies": "social_sciences",
    "sociology": "social_sciences",
    "us_foreign_policy": "social_sciences",
    "virology": "other",
    "world_religions": "humanities",
}


@dataclass(frozen=True)
class LocalTask:
    """One local task (or group) as a user names it.

    Attributes:
        name: the ``dse_*`` name.
        files: paths relative to the data directory that must exist.
        standard: the lm-eval task (or group) whose prompts and metric it reproduces.
        n_docs: documents in the full file(s) shipped in ``../shared/data``, or None where
            that directory does not hold the file.
        group: True for a group of subtasks (``dse_mmlu``).
    """

    name: str
    files: tuple[str, ...]
    standard: str
    n_docs: int | None
    group: bool = False


ARC_EASY_FILE = "arc_easy/ARC-Easy-Test.jsonl"
ARC_CHALLENGE_FILE = "arc_challenge/ARC-Challenge-Test.jsonl"
HELLASWAG_FILE = "hellaswag/hellaswag_val_full.txt"
PIQA_FILE = "piqa/valid.jsonl"
PIQA_LABELS_FILE = "piqa/valid-labels.lst"
BOOLQ_FILE = "boolq/val.jsonl"
TRUTHFULQA_FILE = "truthfulqa/v1/mc_task.json"
LAMBADA_FILE = "lambada/lambada_openai.jsonl"
WINOGRANDE_FILE = "winogrande/dev.jsonl"
WINOGRANDE_LABELS_FILE = "winogrande/dev-labels.lst"


def mmlu_file(subject: str) -> str:
    """The test CSV of one MMLU subject, relative to the data directory."""
    return f"mmlu/test/{subject}_test.csv"


LOCAL_TASKS: dict[str, LocalTask] = {
    task.name: task
    for task in (
        LocalTask("dse_arc_easy", (ARC_EASY_FILE,), "arc_easy", 2376),
        LocalTask("dse_arc_challenge", (ARC_CHALLENGE_FILE,), "arc_challenge", None),
        LocalTask("dse_hellaswag", (HELLASWAG_FILE,), "hellaswag", 10042),
        LocalTask("dse_piqa", (PIQA_FILE, PIQA_LABELS_FILE), "piqa", 1838),
        LocalTask("dse_boolq", (BOOLQ_FILE,), "boolq", 3270),
        LocalTask("dse_truthfulqa_mc1", (TRUTHFULQA_FILE,), "truthfulqa_mc1", 817),
        LocalTask("dse_truthfulqa_mc2", (TRUTHFULQA_FILE,), "truthfulqa_mc2", 817),
        LocalTask(
            "dse_mmlu", tuple(mmlu_file(s) for s in MMLU_SUBJECTS), "mmlu", 14042, group=True
        ),
        LocalTask("dse_lambada", (LAMBADA_FILE,), "lambada_openai", 5153),
        LocalTask("dse_winogrande", (WINOGRANDE_FILE, WINOGRANDE_LABELS_FILE), "winogrande", None),
    )
}


def local_task_names() -> list[str]:
    """The names a user may pass for local tasks, sorted."""
    return sorted(LOCAL_TASKS)


def task_list(tasks: str | Sequence[str]) -> tuple[str, ...]:
    """The task names of ``"a,b"`` (as ``--tasks`` takes them) or of a list: each once, in order.

    The one check of a task list, shared by study definitions, measurement settings and
    :class:`objectives.accuracy.AccuracyObjective`; whether each name exists is checked
    where the tasks are loaded.

    Raises:
        InvalidConfigError: no task, or a task named twice.
    """
    names = tasks.split(",") if isinstance(tasks, str) else list(tasks)
    cleaned = tuple(name.strip() for name in names if name.strip())
    if not cleaned:
        raise InvalidConfigError(f"no tasks given; local tasks: {', '.join(local_task_names())}")
    duplicates = sorted({name for name in cleaned if cleaned.count(name) > 1})
    if duplicates:
        raise InvalidConfigError(f"task(s) {', '.join(duplicates)} given twice; name each task once")
    return cleaned


def is_local_task(name: str) -> bool:
    """True for every ``dse_*`` name: those never go to the hub, known or not."""
    return name.startswith("dse_")


def missing_files(name: str, data_dir: Path) -> list[str]:
    """The files (relative to ``data_dir``) that local task ``name`` needs and lacks."""
    return [f for f in LOCAL_TASKS[name].files if not (data_dir / f).is_file()]
