"""Calibration text from a task's own held-out documents (``[calibration] source = "task:NAME"``).

Data-aware methods fit their factors to the activations of the calibration text, so
calibrating on the documents a study then scores would leak them into the factors. Only
tasks whose data directory holds a split that is *not* evaluated qualify: ARC-Easy's
``Dev`` file and MMLU's ``dev`` files (the few-shot split). Each document becomes one
line, "question answer" with the correct answer, so the text carries the task's own
vocabulary and format. The file is written once into the cache directory, named by its
content, so the calibration key (which hashes the file) follows the data.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

from space.errors import CalibrationError

__all__ = ["TASK_PREFIX", "TASK_SOURCES", "task_calibration_file"]

TASK_PREFIX = "task:"


def _arc_easy(data: Path) -> Iterator[str]:
    with (data / "arc_easy" / "ARC-Easy-Dev.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            doc = json.loads(line)
            answers = {c["label"]: c["text"] for c in doc["question"]["choices"]}
            yield f"Question: {doc['question']['stem']}\nAnswer: {answers.get(doc['answerKey'], '')}"


def _mmlu(data: Path) -> Iterator[str]:
    for path in sorted((data / "mmlu" / "dev").glob("*_dev.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.reader(handle):
                if len(row) != 6 or row[5] not in "ABCD":
                    continue
                yield f"{row[0]}\nAnswer: {row[1 + 'ABCD'.index(row[5])]}"


#: Tasks with a held-out split here, and the files that hold it.
TASK_SOURCES: dict[str, tuple[str, Callable[[Path], Iterator[str]]]] = {
    "dse_arc_easy": ("arc_easy/ARC-Easy-Dev.jsonl", _arc_easy),
    "dse_mmlu": ("mmlu/dev", _mmlu),
}


def task_calibration_file(source: str, data_dir: Path | None, cache_dir: Path) -> Path:
    """The text file for ``task:NAME``, written into ``cache_dir`` on first use.

    Raises:
        CalibrationError: an unknown task, a task without a held-out split, or missing data.
    """
    name = source[len(TASK_PREFIX):].strip()
    allowed = ", ".join(TASK_PREFIX + n for n in TASK_SOURCES)
    if name not in TASK_SOURCES:
        raise CalibrationError(
            f"calibration source {source!r}: no held-out split of {name or 'that task'} here (calibrating on "
            f"the documents a study scores would leak them into the factors); allowed: {allowed}, or a text file"
        )
    relative, reader = TASK_SOURCES[name]
    if data_dir is None or not (data_dir / relative).exists():
        raise CalibrationError(f"calibration source {source!r} needs <data dir>/{relative}, which is missing; "
                               f"set DSE_DATA_DIR or give a text file")
    text = "\n\n".join(reader(data_dir)) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir / "calibration" / f"{name}-{digest}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(text, encoding="utf-8")
        partial.replace(path)
    return path
