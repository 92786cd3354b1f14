"""AccuracyObjective: errors, document plans, the whole lm-eval path on tiny-llama, SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from objectives.accuracy import AccuracyMeasurement, AccuracyObjective, lm_eval_version
from objectives.paired import certainly_above, paired_drop
from objectives.tasks import MMLU_SUBJECTS
from space.errors import DataError, InvalidConfigError, UnknownNameError

TINY_TASKS = ("dse_arc_easy", "dse_piqa")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"tasks": []}, InvalidConfigError, "no tasks given; local tasks: dse_arc_challenge"),
        ({"tasks": ["dse_piqa", "dse_piqa"]}, InvalidConfigError, "dse_piqa given twice"),
        ({"tasks": ["dse_piqa"], "limit": 0}, InvalidConfigError,
         "limit must be a positive number of documents per task or None, got 0"),
        ({"tasks": ["dse_piqa"], "limit": -3}, InvalidConfigError, "got -3"),
        ({"tasks": ["dse_piqa"], "limit": True}, InvalidConfigError, "got True"),
        ({"tasks": ["dse_piqa"], "batch_size": 0}, InvalidConfigError, "batch_size must be a positive integer, got 0"),
        ({"tasks": ["dse_arc_eas"]}, UnknownNameError,
         "unknown local task 'dse_arc_eas'. Did you mean 'dse_arc_easy'?"),
    ],
)
def test_bad_options_raise_one_clear_error(
    kwargs: dict[str, Any], error: type[Exception], message: str, data_dir: Path
) -> None:
    with pytest.raises(error, match=message) as info:
        AccuracyObjective(data_dir=data_dir, **kwargs)
    assert "\n" not in str(info.value)


def test_unknown_local_task_lists_local_tasks_and_mentions_the_hub(data_dir: Path) -> None:
    with pytest.raises(UnknownNameError) as info:
        AccuracyObjective(["dse_nope"], data_dir=data_dir)
    assert "Local tasks: dse_arc_challenge, dse_arc_easy, dse_boolq" in str(info.value)
    assert "need the Hugging Face hub" in str(info.value)


def test_missing_data_directory_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        AccuracyObjective(["dse_piqa"], data_dir=tmp_path / "absent")


def test_no_data_directory_at_all_is_a_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import objectives.accuracy

    monkeypatch.setattr(objectives.accuracy, "resolve_data_dir", lambda explicit: None)
    with pytest.raises(DataError, match="pass --data-dir, set DSE_DATA_DIR"):
        AccuracyObjective(["dse_piqa"])


def test_missing_task_file_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"task 'dse_winogrande' needs winogrande/dev.jsonl, winogrande/dev-labels.lst"):
        AccuracyObjective(["dse_winogrande"], data_dir=tmp_path)
    with pytest.raises(DataError, match=r"needs mmlu/test/abstract_algebra_test.csv, .* and 54 more"):
        AccuracyObjective(["dse_mmlu"], data_dir=tmp_path)


def test_chunk_size_below_one_is_refused(data_dir: Path, tiny_llama: Any) -> None:
    objective = AccuracyObjective(["dse_piqa"], limit=2, data_dir=data_dir)
    with pytest.raises(InvalidConfigError, match="chunk_size must be a positive integer, got 0"):
        objective.measure_chunked(tiny_llama.target(), chunk_size=0)


# --------------------------------------------------------------------------- document plans


def test_limit_takes_the_first_documents_of_the_file(data_dir: Path) -> None:
    objective = AccuracyObjective(["dse_arc_easy", "dse_boolq"], limit=10, data_dir=data_dir)
    documents = objective.documents()
    assert documents["dse_arc_easy"] == [("dse_arc_easy", i) for i in range(10)]
    assert documents["dse_boolq"] == [("dse_boolq", i) for i in range(10)]
    assert objective.planned_docs() == {"dse_arc_easy": 10, "dse_boolq": 10}


def test_no_limit_plans_every_document(data_dir: Path) -> None:
    assert AccuracyObjective(["dse_piqa"], data_dir=data_dir).planned_docs() == {"dse_piqa": 1838}


def test_mmlu_limit_applies_per_subject_in_round_robin_order(data_dir: Path) -> None:
    objective = AccuracyObjective(["dse_mmlu"], limit=2, data_dir=data_dir)
    order = objective.documents()["dse_mmlu"]
    subjects = [f"dse_mmlu_{s}" for s in sorted(MMLU_SUBJECTS)]
    assert len(order) == 114
    assert order[:57] == [(s, 0) for s in subjects]
    assert order[57:] == [(s, 1) for s in subjects]


# --------------------------------------------------------------------------- tiny-llama, offline


@pytest.fixture(scope="module")
def tiny_objective(data_dir: Path) -> AccuracyObjective:
    return AccuracyObjective(TINY_TASKS, limit=10, batch_size=8, data_dir=data_dir, show_progress=False)


@pytest.fixture(scope="module")
def tiny_full(tiny_llama: Any, tiny_objective: AccuracyObjective) -> dict[str, Any]:
    """One full measurement in train mode, with what it did to the model."""
    model = tiny_llama.model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        result = tiny_objective.measure(tiny_llama.target())
        training_after = model.training
        dropout_modes = {m.training for m in model.modules()}
    finally:
        model.eval()
    after = model.state_dict()
    changed = [k for k, v in before.items() if not after[k].equal(v)]
    return {"result": result, "training_after": training_after, "modes": dropout_modes, "changed": changed}


def test_tiny_llama_runs_the_accuracy_path_on_ten_real_documents(tiny_full: dict[str, Any]) -> None:
    result: AccuracyMeasurement = tiny_full["result"]
    assert list(result.per_task) == list(TINY_TASKS)
    for name, task in result.per_task.items():
        assert task.task == name and task.metric == "acc"
        assert task.n_docs == task.n_planned == 10
        assert set(task.per_doc) <= {0.0, 1.0}
        assert task.accuracy == pytest.approx(sum(task.per_doc) / 10)
    assert result.accuracy == pytest.approx(sum(t.accuracy for t in result.per_task.values()) / 2)
    assert result.complete and result.n_docs_total == 20 and result.limit == 10
    assert result.lm_eval_version == lm_eval_version()
    assert result.objective == "accuracy"
    assert AccuracyMeasurement.model_validate_json(result.model_dump_json()) == result


def test_measure_leaves_weights_and_training_mode_unchanged(tiny_full: dict[str, Any]) -> None:
    assert tiny_full["changed"] == []
    assert tiny_full["training_after"] is True
    assert tiny_full["modes"] == {True}


def test_results_equal_lm_eval_simple_evaluate(tiny_llama: Any, tiny_full: dict[str, Any], data_dir: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from objectives.tasks import DATA_DIR_KEY, TASKS_DIR

    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={DATA_DIR_KEY: str(data_dir)})
    lm = HFLM(pretrained=tiny_llama.model, tokenizer=tiny_llama.tokenizer, batch_size=8)
    output = simple_evaluate(model=lm, tasks=["dse_arc_easy"], limit=10, task_manager=manager, bootstrap_iters=0)
    ours = tiny_full["result"].per_task["dse_arc_easy"]
    assert output["results"]["dse_arc_easy"]["acc,none"] == pytest.approx(ours.accuracy)
    samples = sorted(output["samples"]["dse_arc_easy"], key=lambda s: s["doc_id"])
    assert [s["acc"] for s in samples] == ours.per_doc


def test_chunks_concatenate_to_the_full_measurement(
    tiny_llama: Any, tiny_objective: AccuracyObjective, tiny_full: dict[str, Any]
) -> None:
    full: AccuracyMeasurement = tiny_full["result"]
    partials: list[AccuracyMeasurement] = []
    calls: list[tuple[str, int, int]] = []

    def keep_going(partial: AccuracyMeasurement) -> bool:
        partials.append(partial)
        return False

    chunked = tiny_objective.measure_chunked(
        tiny_llama.target(), chunk_size=3, should_stop=keep_going, progress=lambda *a: calls.append(a)
    )
    for name in TINY_TASKS:
        assert chunked.per_task[name].per_doc == full.per_task[name].per_doc
    assert chunked.complete and chunked.accuracy == pytest.approx(full.accuracy)
    assert [p.per_task["dse_arc_easy"].n_docs for p in partials] == [3, 6, 9]
    assert not any(p.complete for p in partials)
    assert partials[1].per_task["dse_piqa"].per_doc == full.per_task["dse_piqa"].per_doc[:6]
    assert calls[0] == ("dse_arc_easy", 0, 10)
    assert ("dse_arc_easy", 10, 10) in calls and calls[-1] == ("dse_piqa", 10, 10)


def test_should_stop_ends_the_evaluation_with_a_prefix(
    tiny_llama: Any, tiny_objective: AccuracyObjective, tiny_full: dict[str, Any]
) -> None:
    full: AccuracyMeasurement = tiny_full["result"]
    stopped = tiny_objective.measure_chunked(
        tiny_llama.target(), chunk_size=4, should_stop=lambda partial: partial.n_docs_total >= 8
    )
    assert not stopped.complete
    assert stopped.n_docs_total == 8
    for name in TINY_TASKS:
        assert stopped.per_task[name].n_docs == 4 and stopped.per_task[name].n_planned == 10
        assert stopped.per_task[name].per_doc == full.per_task[name].per_doc[:4]
    estimate = paired_drop(full, stopped)
    assert estimate.drop_pp == 0.0 and not estimate.complete and estimate.n_docs == 8


@pytest.mark.slow
def test_mmlu_accuracy_is_lm_evals_size_weighted_group_aggregate(tiny_llama: Any, data_dir: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from objectives.tasks import DATA_DIR_KEY, TASKS_DIR

    ours = AccuracyObjective(["dse_mmlu"], limit=1, batch_size=8, data_dir=data_dir, show_progress=False)
    result = ours.measure(tiny_llama.target()).per_task["dse_mmlu"]
    assert result.n_docs == 57
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False, metadata={DATA_DIR_KEY: str(data_dir)})
    lm = HFLM(pretrained=tiny_llama.model, tokenizer=tiny_llama.tokenizer, batch_size=8)
    output = simple_evaluate(model=lm, tasks=["dse_mmlu"], limit=1, task_manager=manager, bootstrap_iters=0)
    assert output["results"]["dse_mmlu"]["acc,none"] == pytest.approx(result.accuracy)
    by_subject = {name: samples[0]["acc"] for name, samples in output["samples"].items()}
    assert result.per_doc == [by_subject[f"dse_mmlu_{s}"] for s in sorted(MMLU_SUBJECTS)]


# --------------------------------------------------------------------------- hub task names


@pytest.mark.slow
def test_hub_task_names_are_checked_against_lm_eval_index(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Online, a standard name stays lm-eval's own; offline (the suite's default, see conftest) it
    # runs as the local dse_* copy.
    offline = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if k in os.environ}
    for key in offline:
        monkeypatch.delenv(key)
    objective = AccuracyObjective(["dse_piqa", "arc_easy"], limit=5, data_dir=data_dir)
    assert objective.tasks == ("dse_piqa", "arc_easy")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert AccuracyObjective(["dse_piqa", "arc_easy"], limit=5, data_dir=data_dir).tasks == ("dse_piqa", "dse_arc_easy")
    with pytest.raises(UnknownNameError, match=r"unknown task 'arc_eazy': not a local task .* Did you mean 'arc_easy'"):
        AccuracyObjective(["arc_eazy"], data_dir=data_dir)


# --------------------------------------------------------------------------- SmolLM2-135M, real data


@pytest.fixture(scope="module")
def arc100(data_dir: Path) -> AccuracyObjective:
    return AccuracyObjective(["dse_arc_easy"], limit=100, batch_size=16, data_dir=data_dir, show_progress=False)


@pytest.fixture(scope="module")
def smollm2_arc100(smollm2: Any, arc100: AccuracyObjective) -> AccuracyMeasurement:
    return arc100.measure(smollm2.target())


@pytest.mark.slow
def test_smollm2_scores_clearly_above_chance_on_100_arc_easy_documents(smollm2_arc100: AccuracyMeasurement) -> None:
    # Four choices: chance is 0.25. Measured here: 0.49 (lm-eval 0.4.13, float32 CPU).
    assert smollm2_arc100.accuracy > 0.35
    assert smollm2_arc100.per_task["dse_arc_easy"].n_docs == 100


@pytest.mark.slow
def test_rank1_on_layers_0_and_1_drops_arc_easy_by_more_than_10_points(
    smollm2: Any, arc100: AccuracyObjective, smollm2_arc100: AccuracyMeasurement
) -> None:
    from dse.surgery import decomposed
    from space.config import DecompositionConfig

    running: list[bool] = []

    def record(partial: AccuracyMeasurement) -> bool:
        running.append(certainly_above(paired_drop(smollm2_arc100, partial), 4.0))
        return False

    with decomposed(smollm2, DecompositionConfig(layers=(0, 1), tensors="all", rank=1)):
        compressed = arc100.measure_chunked(smollm2.target(), chunk_size=25, should_stop=record)
    drop = paired_drop(smollm2_arc100, compressed)
    # The paper's Observation 3: decomposing either of the first two layers is costly.
    assert drop.drop_pp > 10.0
    assert drop.ci_low_pp > 0.0
    # Early stop at tau = 4 pp would have ended this trial before its last chunk.
    assert len(running) == 3 and any(running)
