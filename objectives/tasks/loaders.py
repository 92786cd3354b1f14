"""Readers that turn the benchmark files into lm-eval documents, and the YAMLs' helpers.

Each public reader is a ``custom_dataset`` for one ``dse_*`` YAML: lm-eval calls it with
the task's metadata and ``dataset_kwargs`` as keyword arguments, and it returns a
``datasets.DatasetDict`` built in memory (``Dataset.from_list``), so nothing touches the
hub or the Arrow cache. The documents follow the schema of the Hugging Face dataset
that lm-eval's standard task reads (``allenai/ai2_arc``, ``baber/piqa``,
``aps/super_glue``/boolq, ``truthfulqa/truthful_qa``, ``cais/mmlu``,
``EleutherAI/lambada_openai``, ``allenai/winogrande``); HellaSwag's documents are in
the form lm-eval's ``process_docs`` produces. The YAMLs can then copy lm-eval's
templates verbatim.

Documents keep the order of the file, so ``limit=n`` always means the first n.

The module is long (one short reader per benchmark, and the helpers its YAMLs name) but
one thing: lm-eval finds every reader and helper by this module's path in the YAMLs.

Where a file differs from the dataset lm-eval reads (see ``../shared/data/SOURCES.md``):

- HellaSwag: the file stores ``activity_label + ": " + ctx`` per item, with the bracket
  tags already removed the way lm-eval's ``preprocess`` removes them, and
  ``ctx = ctx_a + " " + ctx_b``. lm-eval capitalises ``ctx_b``. ``ctx_b`` is the
  trailing sentence fragment of ActivityNet items (3,236 of the 10,042 items end in a
  lower-case fragment after the last ". "); WikiHow items have an empty ``ctx_b``. We
  capitalise such a trailing fragment, which reproduces lm-eval's query wherever
  ``ctx_b`` is exactly that fragment; lm-eval's ``preprocess`` is then applied to the
  query and the endings as lm-eval does (a no-op on already clean text).
- LAMBADA: the file splits each passage into ``context`` and ``continuation`` (the
  last word). We rebuild lm-eval's ``text`` as ``context + " " + continuation`` (or
  without the space where the continuation starts with white space: one item, whose
  last word follows a blank line), and lm-eval's template splits it again.
- PIQA's and WinoGrande's labels come from the separate ``.lst`` files; BoolQ's
  ``"true"``/``"false"`` strings become SuperGLUE's 1/0.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from objectives.tasks import (
    ARC_CHALLENGE_FILE,
    ARC_EASY_FILE,
    BOOLQ_FILE,
    DATA_DIR_KEY,
    HELLASWAG_FILE,
    LAMBADA_FILE,
    MMLU_SUBJECTS,
    PIQA_FILE,
    PIQA_LABELS_FILE,
    TRUTHFULQA_FILE,
    WINOGRANDE_FILE,
    WINOGRANDE_LABELS_FILE,
    mmlu_file,
)
from space.env import resolve_data_dir
from space.errors import DataError

if TYPE_CHECKING:
    import datasets

__all__ = [
    "arc_challenge",
    "arc_easy",
    "boolq",
    "hellaswag",
    "hellaswag_preprocess",
    "lambada",
    "mmlu",
    "piqa",
    "read_arc",
    "read_boolq",
    "read_hellaswag",
    "read_lambada",
    "read_mmlu",
    "read_piqa",
    "read_truthfulqa",
    "read_winogrande",
    "truthfulqa",
    "truthfulqa_mc2_process_results",
    "winogrande",
    "winogrande_doc_to_choice",
    "winogrande_doc_to_target",
    "winogrande_doc_to_text",
]

_HELLASWAG_LINES_PER_ITEM = 6


# --------------------------------------------------------------------------- files


def _data_dir(kwargs: dict[str, Any]) -> Path:
    explicit = kwargs.get(DATA_DIR_KEY)
    data_dir = resolve_data_dir(explicit)
    if data_dir is None:
        raise DataError(
            "no benchmark data directory: pass --data-dir, set DSE_DATA_DIR, or place the data "
            "in ../shared/data beside the checkout"
        )
    return data_dir


def _require(data_dir: Path, relative: str) -> Path:
    path = data_dir / relative
    if not path.is_file():
        raise DataError(f"benchmark file {relative!r} is missing from the data directory {data_dir}")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: not a JSON line ({exc.msg})") from None
    return rows


def _read_labels(path: Path, count: int, allowed: set[str]) -> list[str]:
    labels = [line.strip() for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    if len(labels) != count:
        raise DataError(f"{path} holds {len(labels)} labels for {count} documents")
    bad = sorted({label for label in labels if label not in allowed})
    if bad:
        raise DataError(f"{path}: labels must be one of {sorted(allowed)}, got {bad[:3]}")
    return labels


def _field(path: Path, number: int, row: dict[str, Any], key: str) -> Any:
    try:
        return row[key]
    except (KeyError, TypeError):
        raise DataError(f"{path}:{number}: field {key!r} is missing") from None


# --------------------------------------------------------------------------- readers


def read_arc(path: Path) -> list[dict[str, Any]]:
    """AI2 ARC JSONL -> ``allenai/ai2_arc`` rows (id, question, choices{text,label}, answerKey)."""
    docs = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        question = _field(path, number, row, "question")
        choices = _field(path, number, question, "choices")
        labels = [c["label"] for c in choices]
        answer = _field(path, number, row, "answerKey")
        if answer not in labels:
            raise DataError(f"{path}:{number}: answerKey {answer!r} is not one of the labels {labels}")
        docs.append(
            {
                "id": row.get("id", str(number)),
                "question": _field(path, number, question, "stem"),
                "choices": {"text": [c["text"] for c in choices], "label": labels},
                "answerKey": answer,
            }
        )
    return docs


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's ``hellaswag/utils.py:preprocess``, verbatim."""
    text = text.strip()
    # NOTE: Brackets are artifacts of the WikiHow dataset portion of HellaSwag.
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def _capitalise_ctx_b(line: str) -> str:
    """Redo lm-eval's ``ctx_b.capitalize()`` on the trailing fragment where ``ctx_b`` sits."""
    head, sep, tail = line.rpartition(". ")
    if sep and tail and tail[0].islower() and not tail.rstrip().endswith((".", "!", "?")):
        return head + sep + tail.capitalize()
    return line


def read_hellaswag(path: Path) -> list[dict[str, Any]]:
    """The six-lines-per-item text file -> lm-eval's processed hellaswag documents.

    Per item: line 1 ``activity_label: ctx``, line 2 the gold label (0-3), lines 3-6 the
    endings. Returns ``query``, ``choices``, ``gold`` and ``label`` (a string, as in the
    HF dataset) so lm-eval's template ``{{query}}`` / ``{{label}}`` / ``choices`` applies.
    """
    lines = path.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % _HELLASWAG_LINES_PER_ITEM:
        raise DataError(f"{path} has {len(lines)} lines; expected a multiple of {_HELLASWAG_LINES_PER_ITEM}")
    docs = []
    for start in range(0, len(lines), _HELLASWAG_LINES_PER_ITEM):
        context, label, *endings = lines[start : start + _HELLASWAG_LINES_PER_ITEM]
        if label.strip() not in {"0", "1", "2", "3"}:
            raise DataError(f"{path}:{start + 2}: gold label must be 0-3, got {label!r}")
        docs.append(
            {
                "ind": start // _HELLASWAG_LINES_PER_ITEM,
                "query": hellaswag_preprocess(_capitalise_ctx_b(context)),
                "choices": [hellaswag_preprocess(ending) for ending in endings],
                "label": label.strip(),
                "gold": int(label),
            }
        )
    return docs


def read_piqa(path: Path, labels_path: Path) -> list[dict[str, Any]]:
    """PIQA JSONL plus its ``.lst`` labels -> ``baber/piqa`` rows (goal, sol1, sol2, label)."""
    rows = _read_jsonl(path)
    labels = _read_labels(labels_path, len(rows), {"0", "1"})
    return [
        {
            "goal": _field(path, n, row, "goal"),
            "sol1": _field(path, n, row, "sol1"),
            "sol2": _field(path, n, row, "sol2"),
            "label": int(label),
        }
        for n, (row, label) in enumerate(zip(rows, labels, strict=True), start=1)
    ]


def read_boolq(path: Path) -> list[dict[str, Any]]:
    """SuperGLUE BoolQ JSONL -> ``super_glue/boolq`` rows with the label as 0 (false) / 1 (true)."""
    docs = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        label = _field(path, number, row, "label")
        if isinstance(label, str):
            if label.lower() not in {"true", "false"}:
                raise DataError(f"{path}:{number}: label must be 'true' or 'false', got {label!r}")
            value = int(label.lower() == "true")
        else:
            value = int(bool(label))
        docs.append(
            {
                "question": _field(path, number, row, "question"),
                "passage": _field(path, number, row, "passage"),
                "idx": row.get("idx", number - 1),
                "label": value,
            }
        )
    return docs


def read_truthfulqa(path: Path) -> list[dict[str, Any]]:
    """TruthfulQA ``mc_task.json`` -> ``truthful_qa``/multiple_choice rows.

    The HF dataset was built from this file: each ``mcN_targets`` mapping (answer ->
    0/1, in file order) becomes ``{"choices": [...], "labels": [...]}``.
    """
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a JSON file ({exc.msg})") from None
    docs = []
    for number, row in enumerate(rows, start=1):
        doc: dict[str, Any] = {"question": _field(path, number, row, "question")}
        for key in ("mc1_targets", "mc2_targets"):
            targets = _field(path, number, row, key)
            doc[key] = {"choices": list(targets), "labels": [int(v) for v in targets.values()]}
        # lm-eval's mc1 target is index 0: the file lists the one true answer first.
        if doc["mc1_targets"]["labels"][:1] != [1] or sum(doc["mc1_targets"]["labels"]) != 1:
            raise DataError(f"{path}: question {number} does not list its one true mc1 answer first")
        docs.append(doc)
    return docs


def read_mmlu(path: Path, subject: str) -> list[dict[str, Any]]:
    """A headerless hendrycks CSV (question, A, B, C, D, letter) -> ``cais/mmlu`` rows."""
    docs = []
    with path.open(encoding="utf-8", newline="") as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if len(row) != 6 or row[5].strip() not in {"A", "B", "C", "D"}:
                raise DataError(f"{path}:{number}: expected question, 4 choices and an answer letter A-D")
            docs.append(
                {
                    "question": row[0],
                    "subject": subject,
                    "choices": row[1:5],
                    "answer": "ABCD".index(row[5].strip()),
                }
            )
    return docs


def read_lambada(path: Path) -> list[dict[str, Any]]:
    """``{"context", "continuation"}`` JSONL -> ``lambada_openai`` rows (``text``)."""
    docs = []
    for number, row in enumerate(_read_jsonl(path), start=1):
        context = _field(path, number, row, "context")
        continuation = _field(path, number, row, "continuation")
        joiner = "" if continuation[:1].isspace() else " "
        docs.append({"text": context + joiner + continuation})
    return docs


def read_winogrande(path: Path, labels_path: Path) -> list[dict[str, Any]]:
    """WinoGrande dev JSONL plus ``dev-labels.lst`` -> ``allenai/winogrande`` rows."""
    rows = _read_jsonl(path)
    labels = _read_labels(labels_path, len(rows), {"1", "2"})
    docs = []
    for number, (row, label) in enumerate(zip(rows, labels, strict=True), start=1):
        sentence = _field(path, number, row, "sentence")
        if "_" not in sentence:
            raise DataError(f"{path}:{number}: the sentence has no '_' blank")
        docs.append(
            {
                "qID": row.get("qID", str(number)),
                "sentence": sentence,
                "option1": _field(path, number, row, "option1"),
                "option2": _field(path, number, row, "option2"),
                "answer": label,
            }
        )
    return docs


# --------------------------------------------------------------------------- custom_dataset entry points


def _dataset(split: str, docs: list[dict[str, Any]]) -> datasets.DatasetDict:
    import datasets

    return datasets.DatasetDict({split: datasets.Dataset.from_list(docs)})


def arc_easy(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_arc_easy``: ARC-Easy test."""
    return _dataset("test", read_arc(_require(_data_dir(kwargs), ARC_EASY_FILE)))


def arc_challenge(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_arc_challenge``: ARC-Challenge test."""
    return _dataset("test", read_arc(_require(_data_dir(kwargs), ARC_CHALLENGE_FILE)))


def hellaswag(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_hellaswag``: HellaSwag validation."""
    return _dataset("validation", read_hellaswag(_require(_data_dir(kwargs), HELLASWAG_FILE)))


def piqa(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_piqa``: PIQA validation."""
    data_dir = _data_dir(kwargs)
    docs = read_piqa(_require(data_dir, PIQA_FILE), _require(data_dir, PIQA_LABELS_FILE))
    return _dataset("validation", docs)


def boolq(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_boolq``: BoolQ (SuperGLUE) validation."""
    return _dataset("validation", read_boolq(_require(_data_dir(kwargs), BOOLQ_FILE)))


def truthfulqa(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_truthfulqa_mc1`` and ``_mc2``: TruthfulQA (2021 "v1") validation."""
    return _dataset("validation", read_truthfulqa(_require(_data_dir(kwargs), TRUTHFULQA_FILE)))


def mmlu(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_mmlu_<subject>``: one MMLU subject's test split; ``subject`` comes from dataset_kwargs."""
    subject = kwargs.get("subject")
    if subject not in MMLU_SUBJECTS:
        raise DataError(f"unknown MMLU subject {subject!r}; the YAML must set dataset_kwargs.subject")
    return _dataset("test", read_mmlu(_require(_data_dir(kwargs), mmlu_file(subject)), subject))


def lambada(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_lambada``: LAMBADA (OpenAI) test."""
    return _dataset("test", read_lambada(_require(_data_dir(kwargs), LAMBADA_FILE)))


def winogrande(**kwargs: Any) -> datasets.DatasetDict:
    """``dse_winogrande``: WinoGrande dev (lm-eval's ``winogrande_xl`` validation)."""
    data_dir = _data_dir(kwargs)
    docs = read_winogrande(_require(data_dir, WINOGRANDE_FILE), _require(data_dir, WINOGRANDE_LABELS_FILE))
    return _dataset("validation", docs)


# --------------------------------------------------------------------------- helpers named by the YAMLs
# Copies of lm-eval's own helpers (tasks/truthfulqa/utils.py, tasks/winogrande/
# preprocess_winogrande.py): importing those modules would pull in sacrebleu and
# rouge_score, which the multiple-choice metrics never use.


def truthfulqa_mc2_process_results(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float]:
    """MC2: the normalised probability mass of the true answers."""
    ll, _ = zip(*results, strict=True)
    probs = np.exp(np.array(ll))
    probs_norm = probs / np.sum(probs)
    labels = np.array(doc["mc2_targets"]["labels"])
    return {"acc": float(np.sum(probs_norm[labels == 1]))}


def winogrande_doc_to_text(doc: dict[str, Any]) -> int:
    """Partial evaluation: the index of the true context (each option fills the blank)."""
    answer_to_num = {"1": 0, "2": 1}
    return answer_to_num[doc["answer"]]


def winogrande_doc_to_target(doc: dict[str, Any]) -> str:
    """The continuation scored under each context: the sentence after the blank."""
    sentence: str = doc["sentence"]
    return sentence[sentence.index("_") + 1:].strip()


def winogrande_doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """The two contexts: the sentence up to the blank, filled with each option."""
    idx = doc["sentence"].index("_")
    options = [doc["option1"], doc["option2"]]
    return [doc["sentence"][:idx] + opt for opt in options]
