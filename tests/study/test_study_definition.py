"""Study definitions: TOML files, CLI overrides, one error line per problem, the change diff."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dse.study.definition import StudyDefinition, definition_diff, load_definition
from space.errors import DataError, InvalidConfigError

STUDIES = Path(__file__).resolve().parents[2] / "studies"


@pytest.mark.parametrize("name", ["smollm2-quick", "smollm2-full", "smollm2-profile", "smollm2-combined",
                                  "llama2-7b-paper"])
def test_shipped_definitions_load(name: str) -> None:
    definition = load_definition(STUDIES / f"{name}.toml")
    assert definition.study_name == name
    assert definition.tau == 4.0


def test_quick_study_is_the_real_smollm2_on_three_local_tasks() -> None:
    quick = load_definition(STUDIES / "smollm2-quick.toml")
    assert quick.model == "smollm2-135m" and quick.device == "cpu"
    assert len(quick.evaluation.tasks) == 3 and all(t.startswith("dse_") for t in quick.evaluation.tasks)
    assert quick.n_trials == 10 and quick.evaluation.limit is not None


def test_paper_study_is_llama2_chat_on_six_benchmarks_with_rules_on() -> None:
    paper = load_definition(STUDIES / "llama2-7b-paper.toml")
    assert paper.model == "meta-llama/Llama-2-7b-chat-hf"
    assert (paper.device, paper.dtype) == ("cuda", "float16")
    assert len(paper.evaluation.tasks) == 6
    assert {"rank-one", "whole-layers", "skip-early", "min-distance"} <= set(paper.rules)


def test_file_name_is_the_default_study_name(tmp_path: Path) -> None:
    path = tmp_path / "my-study.toml"
    path.write_text('model = "tiny-llama"\n')
    assert load_definition(path).study_name == "my-study"


def test_unknown_keys_and_wrong_types_give_one_error_each(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'tau = "four"\nn_trial = 3\n[evaluation]\nlimit = 0\ntasks = ["dse_arc_easy"]\nbogus = 1\n'
        "[search]\nsampler = 5\n"
    )
    with pytest.raises(ValidationError) as info:
        load_definition(path)
    where = sorted(".".join(str(p) for p in e["loc"]) for e in info.value.errors())
    assert where == ["evaluation.bogus", "evaluation.limit", "n_trial", "search.sampler", "tau"]


def test_not_toml_is_one_data_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("tau = = 4\n")
    with pytest.raises(DataError, match="not valid TOML"):
        load_definition(path)
    with pytest.raises(DataError, match="does not exist"):
        load_definition(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("tau", -1.0, r"finite number in \(0, 100\]"),
        ("n_trials", 0, "greater than or equal to 1"),
        ("objective", "speed", "unknown objective 'speed'"),
        ("rules", {"skip-erly": 2}, "Did you mean 'skip-early'"),
        ("rules", {"whole-layers": 3}, "takes no value"),
        ("device", "tpu", "unknown device"),
        ("name", "../x", "not allowed"),
    ],
)
def test_bad_values_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        StudyDefinition.model_validate({field: value})


def test_sampler_and_encoding_names_are_checked() -> None:
    with pytest.raises(ValidationError, match="unknown sampler 'cma'"):
        StudyDefinition.model_validate({"search": {"sampler": "cma"}})
    with pytest.raises(ValidationError, match="unknown encoding 'dense'"):
        StudyDefinition.model_validate({"search": {"encoding": "dense"}})


def test_objective_must_be_measured() -> None:
    with pytest.raises(ValidationError, match=r"needs evaluation.measure_latency"):
        StudyDefinition.model_validate({"objective": "edp", "evaluation": {"measure_latency": False}})
    ok = StudyDefinition.model_validate({"objective": "params", "evaluation": {"measure_latency": False}})
    assert ok.objective == "params"


def test_overrides_reach_sections_and_are_validated() -> None:
    base = StudyDefinition(model="tiny-llama")
    changed = base.with_overrides(tasks="dse_piqa, dse_boolq", limit=7, seed=3, tau=2.5, n_trials=None)
    assert changed.evaluation.tasks == ("dse_piqa", "dse_boolq")
    assert (changed.evaluation.limit, changed.search.seed, changed.tau) == (7, 3, 2.5)
    assert changed.n_trials == base.n_trials
    with pytest.raises(ValidationError):
        base.with_overrides(limit=0)
    with pytest.raises(InvalidConfigError, match="unknown study setting"):
        base.with_overrides(colour="red")


def test_diff_names_changed_keys_and_ignores_the_budget() -> None:
    a = StudyDefinition(model="tiny-llama")
    b = a.with_overrides(tau=3.0, limit=9, n_trials=99, storage="sqlite:///other.db", timeout=5)
    assert definition_diff(a.identity(), b.identity()) == ["evaluation.limit: null -> 9", "tau: 4.0 -> 3.0"]
    assert definition_diff(a.identity(), a.with_overrides(n_trials=1).identity()) == []


def test_the_fast_path_switch_reaches_the_evaluator_and_does_not_change_what_a_study_is(tmp_path: Path) -> None:
    from dse.study.measuring import measurement_settings

    path = tmp_path / "slow.toml"
    path.write_text('model = "tiny-llama"\n[evaluation]\nfast = false\n', encoding="utf-8")
    plain = load_definition(path)
    default = StudyDefinition(model="tiny-llama", name="slow")
    assert default.evaluation.fast is True and plain.evaluation.fast is False
    assert measurement_settings(plain).fast is False and measurement_settings(default).fast is True
    # the same per-document outcomes either way: toggling it resumes the study and keeps the memo
    assert definition_diff(default.identity(), plain.identity()) == []
    assert measurement_settings(plain).key() == measurement_settings(default).key()
    path.write_text('model = "tiny-llama"\n[evaluation]\nfast = "sometimes"\n', encoding="utf-8")
    with pytest.raises(ValidationError, match="fast"):
        load_definition(path)
