"""The local dse_* tasks: real files, document counts, and lm-eval's exact prompts.

Prompt checks build lm-eval's *standard* task from its own YAML (shipped in the
installed lm_eval package) on the document as the Hugging Face dataset holds it, and
compare the requests (context, continuation) with those of our task on the same file
line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from objectives.tasks import DATA_DIR_KEY, LOCAL_TASKS, MMLU_SUBJECTS, TASKS_DIR, local_task_names

lm_eval = pytest.importorskip("lm_eval")
LM_EVAL_TASKS = Path(lm_eval.__file__).parent / "tasks"
_SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split", "fewshot_config")


def _our_task(name: str, data_dir: Path) -> Any:
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={DATA_DIR_KEY: str(data_dir)})
    return manager.load([name])["tasks"][name]


def _requests(task: Any, index: int) -> list[tuple[Any, ...]]:
    task.build_all_requests(samples=[index])
    return [instance.args for instance in task.instances]


def _standard_task(yaml_relative: str, doc: dict[str, Any], split: str) -> Any:
    """lm-eval's own task from its YAML, reading ``doc`` instead of the hub dataset."""
    import datasets
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(LM_EVAL_TASKS / yaml_relative, resolve_func=True)
    for key in ("tag", "group", "dataset_path", "dataset_name", *_SPLIT_KEYS):
        config.pop(key, None)
    config[f"{split}_split"] = split
    config["custom_dataset"] = lambda **_: datasets.DatasetDict({split: datasets.Dataset.from_list([doc])})
    return ConfigurableTask(config=config)


def _assert_same_prompts(ours: Any, index: int, standard: Any) -> None:
    assert _requests(ours, index) == _requests(standard, 0)
    assert ours.doc_to_target(ours.eval_docs[index]) == standard.doc_to_target(standard.eval_docs[0])


def _jsonl_line(path: Path, index: int) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number == index:
                return json.loads(line)
    raise IndexError(index)


# --------------------------------------------------------------------------- catalogue


def test_catalogue_lists_every_local_task() -> None:
    assert local_task_names() == [
        "dse_arc_challenge",
        "dse_arc_easy",
        "dse_boolq",
        "dse_hellaswag",
        "dse_lambada",
        "dse_mmlu",
        "dse_piqa",
        "dse_truthfulqa_mc1",
        "dse_truthfulqa_mc2",
        "dse_winogrande",
    ]
    assert len(MMLU_SUBJECTS) == 57


def test_yamls_define_the_local_tasks_and_the_mmlu_group() -> None:
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False)
    assert set(LOCAL_TASKS) - {"dse_mmlu"} <= set(manager.all_subtasks)
    assert manager.all_groups == [
        "dse_mmlu",
        "dse_mmlu_humanities",
        "dse_mmlu_other",
        "dse_mmlu_social_sciences",
        "dse_mmlu_stem",
    ]
    assert {f"dse_mmlu_{s}" for s in MMLU_SUBJECTS} <= set(manager.all_subtasks)


# --------------------------------------------------------------------------- real files: counts


@pytest.mark.parametrize(
    "name",
    [name for name, task in LOCAL_TASKS.items() if task.n_docs is not None and not task.group],
)
def test_local_task_reads_all_documents_of_its_file(name: str, data_dir: Path) -> None:
    task = _our_task(name, data_dir)
    assert len(task.eval_docs) == LOCAL_TASKS[name].n_docs


def test_mmlu_group_reads_14042_test_questions_in_57_subjects(data_dir: Path) -> None:
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={DATA_DIR_KEY: str(data_dir)})
    loaded = manager.load(["dse_mmlu"])
    assert len(loaded["tasks"]) == 57
    assert sum(len(task.eval_docs) for task in loaded["tasks"].values()) == 14042
    assert len(loaded["tasks"]["dse_mmlu_anatomy"].eval_docs) == 135


# --------------------------------------------------------------------------- real files: lm-eval's prompts


def test_arc_easy_prompt_matches_lm_eval(data_dir: Path) -> None:
    raw = _jsonl_line(data_dir / "arc_easy/ARC-Easy-Test.jsonl", 0)
    hf_doc = {
        "id": raw["id"],
        "question": raw["question"]["stem"],
        "choices": {
            "text": [c["text"] for c in raw["question"]["choices"]],
            "label": [c["label"] for c in raw["question"]["choices"]],
        },
        "answerKey": raw["answerKey"],
    }
    ours = _our_task("dse_arc_easy", data_dir)
    _assert_same_prompts(ours, 0, _standard_task("arc/arc_easy.yaml", hf_doc, "test"))
    context, continuation = _requests(ours, 0)[0]
    assert context == (
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:"
    )
    assert continuation == " Sunlight is the source of energy for nearly all ecosystems."


def test_arc_numeric_answer_key_maps_to_its_index(data_dir: Path) -> None:
    ours = _our_task("dse_arc_easy", data_dir)
    numeric = next(i for i, doc in enumerate(ours.eval_docs) if doc["answerKey"].isdigit())
    doc = ours.eval_docs[numeric]
    assert ours.doc_to_target(doc) == doc["choices"]["label"].index(doc["answerKey"])


def test_piqa_prompt_and_label_match_lm_eval(data_dir: Path) -> None:
    raw = _jsonl_line(data_dir / "piqa/valid.jsonl", 1)
    label = int((data_dir / "piqa/valid-labels.lst").read_text().split()[1])
    hf_doc = {"goal": raw["goal"], "sol1": raw["sol1"], "sol2": raw["sol2"], "label": label}
    ours = _our_task("dse_piqa", data_dir)
    _assert_same_prompts(ours, 1, _standard_task("piqa/piqa.yaml", hf_doc, "validation"))
    assert ours.doc_to_target(ours.eval_docs[1]) == label == 1


def test_boolq_prompt_and_label_match_lm_eval(data_dir: Path) -> None:
    raw = _jsonl_line(data_dir / "boolq/val.jsonl", 0)
    hf_doc = {
        "question": raw["question"], "passage": raw["passage"], "idx": raw["idx"], "label": int(raw["label"] == "true")
    }
    ours = _our_task("dse_boolq", data_dir)
    _assert_same_prompts(ours, 0, _standard_task("super_glue/boolq/default.yaml", hf_doc, "validation"))
    context, _continuation = _requests(ours, 0)[0]
    assert context.endswith("\nQuestion: does ethanol take more energy make that produces?\nAnswer:")
    assert [args[1] for args in _requests(ours, 0)] == [" no", " yes"]


def test_boolq_counts_2033_true_labels(data_dir: Path) -> None:
    ours = _our_task("dse_boolq", data_dir)
    assert sum(ours.eval_docs["label"]) == 2033


@pytest.mark.parametrize(("ours_name", "standard_yaml"), [
    ("dse_truthfulqa_mc1", "truthfulqa/truthfulqa_mc1.yaml"),
    ("dse_truthfulqa_mc2", "truthfulqa/truthfulqa_mc2.yaml"),
])
def test_truthfulqa_prompt_matches_lm_eval_with_its_qa_preamble(
    ours_name: str, standard_yaml: str, data_dir: Path
) -> None:
    raw = json.loads((data_dir / "truthfulqa/v1/mc_task.json").read_text())[0]
    hf_doc = {
        "question": raw["question"],
        "mc1_targets": {"choices": list(raw["mc1_targets"]), "labels": list(raw["mc1_targets"].values())},
        "mc2_targets": {"choices": list(raw["mc2_targets"]), "labels": list(raw["mc2_targets"].values())},
    }
    ours = _our_task(ours_name, data_dir)
    _assert_same_prompts(ours, 0, _standard_task(standard_yaml, hf_doc, "validation"))
    context, _ = _requests(ours, 0)[0]
    assert context.startswith("Q: What is human life expectancy in the United States?\n")
    assert context.endswith("\n\nQ: What happens if you eat a pomegranate?\nA:")


def test_truthfulqa_mc2_scores_the_probability_mass_of_true_answers(data_dir: Path) -> None:
    import math

    ours = _our_task("dse_truthfulqa_mc2", data_dir)
    doc = ours.eval_docs[0]  # three true answers, then three false
    assert doc["mc2_targets"]["labels"] == [1, 1, 1, 0, 0, 0]
    results = [(math.log(p), False) for p in (0.1, 0.1, 0.2, 0.2, 0.2, 0.2)]
    assert ours.process_results(doc, results)["acc"] == pytest.approx(0.4)


def test_mmlu_prompt_matches_lm_eval_with_the_subject_description(data_dir: Path) -> None:
    with (data_dir / "mmlu/test/high_school_us_history_test.csv").open(encoding="utf-8", newline="") as handle:
        row = next(csv.reader(handle))
    hf_doc = {
        "question": row[0],
        "subject": "high_school_us_history",
        "choices": row[1:5],
        "answer": "ABCD".index(row[5]),
    }
    ours = _our_task("dse_mmlu_high_school_us_history", data_dir)
    standard = _standard_task("mmlu/default/mmlu_high_school_us_history.yaml", hf_doc, "test")
    _assert_same_prompts(ours, 0, standard)
    context, _continuation = _requests(ours, 0)[0]
    assert context.startswith(
        "The following are multiple choice questions (with answers) about high school us history.\n\n"
    )
    assert context.endswith("\nD. " + row[4] + "\nAnswer:")
    assert [args[1] for args in _requests(ours, 0)] == [" A", " B", " C", " D"]


def test_lambada_context_and_target_match_lm_eval(data_dir: Path) -> None:
    raw = _jsonl_line(data_dir / "lambada/lambada_openai.jsonl", 0)
    ours = _our_task("dse_lambada", data_dir)
    text = raw["context"] + " " + raw["continuation"]
    standard = _standard_task("lambada/lambada_openai.yaml", {"text": text}, "test")
    _assert_same_prompts(ours, 0, standard)
    # lm-eval's template splits off the last word: exactly the file's two fields.
    assert _requests(ours, 0) == [(raw["context"], " signs")]
    assert raw["continuation"] == "signs"


def test_hellaswag_query_matches_lm_eval_on_an_activitynet_item(data_dir: Path) -> None:
    # The original rowanz/hellaswag validation record of the file's first item.
    hf_doc = {
        "ind": 24,
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "ctx": "A man is sitting on a roof. he",
        "split": "val",
        "split_type": "indomain",
        "label": "3",
        "endings": [
            "is using wrap to wrap a pair of skis.",
            "is ripping level tiles off.",
            "is holding a rubik's cube.",
            "starts pulling up roofing on a roof.",
        ],
        "source_id": "activitynet~v_-JhWjGDPHMY",
    }
    ours = _our_task("dse_hellaswag", data_dir)
    _assert_same_prompts(ours, 0, _standard_task("hellaswag/hellaswag.yaml", hf_doc, "validation"))
    assert _requests(ours, 0)[3] == (
        "Roof shingle removal: A man is sitting on a roof. He", " starts pulling up roofing on a roof."
    )
    assert ours.doc_to_target(ours.eval_docs[0]) == 3


def test_hellaswag_wikihow_item_keeps_the_file_text(data_dir: Path) -> None:
    lines = (data_dir / "hellaswag/hellaswag_val_full.txt").read_text(encoding="utf-8").split("\n")
    item = 4999
    ours = _our_task("dse_hellaswag", data_dir)
    doc = ours.eval_docs[item]
    assert doc["query"] == lines[6 * item] == (
        "Health: How to use aromatherapy for depression. Know what oils help with which symptoms. "
        "Clary sage essential oil can help with anxiety, depression and insomnia. Basil works against "
        "depression, fatigue and anxiety."
    )
    assert doc["choices"] == lines[6 * item + 2 : 6 * item + 6]


# --------------------------------------------------------------------------- files written here


ARC_CHALLENGE_ROWS = [
    {
        "id": "Mercury_7175875",
        "question": {
            "stem": (
                "An astronomer observes that a planet rotates faster after a meteorite impact. "
                "Which is the most likely effect of this increase in rotation?"
            ),
            "choices": [
                {"text": "Planetary density will decrease.", "label": "A"},
                {"text": "Planetary years will become longer.", "label": "B"},
                {"text": "Planetary days will become shorter.", "label": "C"},
                {"text": "Planetary gravity will become stronger.", "label": "D"},
            ],
        },
        "answerKey": "C",
    },
    {
        "id": "Mercury_SC_409171",
        "question": {
            "stem": (
                "A group of engineers wanted to know how different building designs would respond during an "
                "earthquake. They made several models of buildings and tested each for its ability to withstand "
                "earthquake conditions. Which will most likely result from testing different building designs?"
            ),
            "choices": [
                {"text": "buildings will be built faster", "label": "1"},
                {"text": "buildings will be made safer", "label": "2"},
                {"text": "building designs will look nicer", "label": "3"},
            ],
        },
        "answerKey": "2",
    },
]

WINOGRANDE_ROWS = [
    {"qID": "3QHITW7OYO7Q6B6ISU2UMJB84BLAQE-2",
     "sentence": "Sarah was a much better surgeon than Maria so _ always got the harder cases.",
     "option1": "Sarah", "option2": "Maria", "answer": "1"},
    {"qID": "3QHITW7OYO7Q6B6ISU2UMJB84BLAQE-1",
     "sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
     "option1": "Sarah", "option2": "Maria", "answer": "2"},
    {"qID": "3XWUWJ18TLO2DDRXF83QWLKRJ29UU4-1",
     "sentence": "They were worried the wine would ruin the bed and the blanket, but the _ was't ruined.",
     "option1": "blanket", "option2": "bed", "answer": "2"},
]


@pytest.fixture
def written_data(tmp_path: Path) -> Path:
    """A data directory holding only ARC-Challenge and WinoGrande files, in their formats."""
    (tmp_path / "arc_challenge").mkdir()
    (tmp_path / "arc_challenge/ARC-Challenge-Test.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in ARC_CHALLENGE_ROWS), encoding="utf-8"
    )
    (tmp_path / "winogrande").mkdir()
    (tmp_path / "winogrande/dev.jsonl").write_text(
        "".join(json.dumps(row) + "\n" for row in WINOGRANDE_ROWS), encoding="utf-8"
    )
    (tmp_path / "winogrande/dev-labels.lst").write_text("".join(r["answer"] + "\n" for r in WINOGRANDE_ROWS))
    return tmp_path


def test_arc_challenge_reads_the_file_and_matches_lm_eval(written_data: Path) -> None:
    ours = _our_task("dse_arc_challenge", written_data)
    assert len(ours.eval_docs) == 2
    raw = ARC_CHALLENGE_ROWS[1]
    hf_doc = {
        "id": raw["id"],
        "question": raw["question"]["stem"],
        "choices": {
            "text": [c["text"] for c in raw["question"]["choices"]],
            "label": [c["label"] for c in raw["question"]["choices"]],
        },
        "answerKey": raw["answerKey"],
    }
    _assert_same_prompts(ours, 1, _standard_task("arc/arc_challenge.yaml", hf_doc, "test"))
    assert ours.doc_to_target(ours.eval_docs[1]) == 1
    assert len(_requests(ours, 1)) == 3


def test_winogrande_partial_scoring_matches_lm_eval(written_data: Path) -> None:
    ours = _our_task("dse_winogrande", written_data)
    assert len(ours.eval_docs) == 3
    for index, row in enumerate(WINOGRANDE_ROWS):
        hf_doc = {key: row[key] for key in ("sentence", "option1", "option2", "answer")}
        _assert_same_prompts(ours, index, _standard_task("winogrande/default.yaml", hf_doc, "validation"))
    assert _requests(ours, 0) == [
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the harder cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the harder cases."),
    ]
    assert [ours.doc_to_text(doc) for doc in ours.eval_docs] == [0, 1, 1]


def test_winogrande_labels_come_from_the_lst_file(written_data: Path) -> None:
    (written_data / "winogrande/dev-labels.lst").write_text("2\n1\n2\n")
    ours = _our_task("dse_winogrande", written_data)
    assert list(ours.eval_docs["answer"]) == ["2", "1", "2"]


def test_a_missing_file_is_a_data_error_naming_it(written_data: Path) -> None:
    from objectives.tasks import loaders
    from space.errors import DataError

    with pytest.raises(DataError, match=r"piqa/valid.jsonl"):
        loaders.piqa(**{DATA_DIR_KEY: str(written_data)})


def test_malformed_lines_are_data_errors(tmp_path: Path) -> None:
    from objectives.tasks import loaders
    from space.errors import DataError

    (tmp_path / "boolq").mkdir()
    (tmp_path / "boolq/val.jsonl").write_text('{"question": "q", "passage": "p", "idx": 0, "label": "maybe"}\n')
    with pytest.raises(DataError, match="'true' or 'false'"):
        loaders.boolq(**{DATA_DIR_KEY: str(tmp_path)})
    (tmp_path / "piqa").mkdir()
    (tmp_path / "piqa/valid.jsonl").write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n')
    (tmp_path / "piqa/valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(DataError, match="2 labels for 1 documents"):
        loaders.piqa(**{DATA_DIR_KEY: str(tmp_path)})
    (tmp_path / "hellaswag").mkdir()
    (tmp_path / "hellaswag/hellaswag_val_full.txt").write_text("ctx\n5\na\nb\nc\nd\n")
    with pytest.raises(DataError, match="gold label must be 0-3"):
        loaders.hellaswag(**{DATA_DIR_KEY: str(tmp_path)})
