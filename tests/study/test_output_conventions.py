"""Output conventions every command keeps.

One JSON object with schema_version, full tables when piped, DSE_STORAGE, progress lines
without a TTY, library warnings once, and dependency floors that hold.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from dse.cli import main
from dse.cli._common import SCHEMA_VERSION, json_payload

REPO = Path(__file__).resolve().parents[2]


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    main([*args, "--json"])
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON document on stdout


@pytest.mark.parametrize("args", [
    ("space", "show", "tiny-llama"),
    ("space", "size", "tiny-llama"),
    ("space", "check", "tiny-llama", "--layers", "1", "--rank", "1"),
    ("space", "rules"),
])
def test_every_json_output_is_one_object_with_schema_version(capsys, args) -> None:  # type: ignore[no-untyped-def]
    payload = _json(capsys, *args)
    assert isinstance(payload, dict) and payload["schema_version"] == SCHEMA_VERSION
    assert next(iter(payload)) == "schema_version"


def test_lists_and_null_go_under_a_key() -> None:
    assert json_payload([1, 2], key="studies") == {"schema_version": SCHEMA_VERSION, "studies": [1, 2]}
    assert json_payload(None, key="best") == {"schema_version": SCHEMA_VERSION, "best": None}
    with pytest.raises(TypeError):
        json_payload([1])


def test_study_commands_json_and_full_names_when_piped(make_definition, capsys) -> None:  # type: ignore[no-untyped-def]
    from study_fakes import FakeFactory

    from dse.study.api import run_study

    long_name = "a-study-with-a-rather-long-name-that-a-narrow-terminal-would-cut-" + "x" * 30
    definition = make_definition(n_trials=3, name=long_name)
    run_study(definition, evaluator_factory=FakeFactory(), progress=False, plots=False)
    storage = definition.storage
    listed = _json(capsys, "study", "list", "--storage", storage)
    assert listed["schema_version"] == SCHEMA_VERSION and [s["name"] for s in listed["studies"]] == [long_name]
    for args in (("study", "show", long_name), ("study", "best", long_name), ("study", "pareto", long_name),
                 ("study", "export", long_name)):
        payload = _json(capsys, *args, "--storage", storage)
        assert payload["schema_version"] == SCHEMA_VERSION, args
    # capsys's stdout is no terminal, as `dse study list | cat`: the table keeps the whole name.
    main(["study", "list", "--storage", storage])
    out = capsys.readouterr().out
    assert long_name in out
    assert max(len(line) for line in out.splitlines()) > 120  # laid out wide, not wrapped to 80


def test_dse_storage_is_the_default_database(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dse.study.definition import StudyDefinition
    from dse.study.storage import DEFAULT_STORAGE, check_storage

    monkeypatch.delenv("DSE_STORAGE", raising=False)
    assert StudyDefinition().storage == DEFAULT_STORAGE
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("DSE_STORAGE", url)
    assert check_storage(None, create=True).path == tmp_path / "shared.db"
    assert StudyDefinition().storage == url
    assert StudyDefinition(storage="sqlite:///other.db").storage == "sqlite:///other.db"


def test_progress_without_a_tty_is_plain_lines(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from space.progress import progress_bar

    monkeypatch.setenv("DSE_PROGRESS_INTERVAL", "0")
    stream = io.StringIO()
    for _ in progress_bar(range(5), file=stream, desc="trials"):
        pass
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("trials:") and "5/5" in lines[-1]


def test_progress_lines_are_periodic(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from space.progress import progress_bar

    monkeypatch.setenv("DSE_PROGRESS_INTERVAL", "3600")
    stream = io.StringIO()
    for _ in progress_bar(range(500), file=stream, desc="docs"):
        pass
    # The first line, and the final one at close: nothing in between within an hour.
    assert len(stream.getvalue().splitlines()) == 2


def test_library_warnings_appear_once(capsys) -> None:  # type: ignore[no-untyped-def]
    from space import quiet

    with warnings.catch_warnings():
        quiet.library_warnings_once()
        quiet._SEEN_WARNINGS.clear()
        for _ in range(3):
            with warnings.catch_warnings():  # lm-eval and torch open such blocks per call
                pass
            warnings.warn_explicit("`past_key_values` is deprecated (test)", FutureWarning, "modeling.py", 1,
                                   module="transformers.models.llama.modeling_llama", registry={})
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "past_key_values" in line] == [
        "warning: modeling.py:1: FutureWarning: `past_key_values` is deprecated (test)"]


def _floor(requirement: str) -> tuple[str, str]:
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    floors = [s.version for s in req.specifier if s.operator in (">=", "==", "~=")]
    return req.name, floors[0] if floors else "0"


def test_dependency_floors_match_what_the_code_uses() -> None:
    import importlib.metadata as md
    import inspect

    import tomllib
    from packaging.version import Version

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = dict(_floor(d) for d in deps if "python_version" not in d)
    for name, floor in floors.items():
        assert Version(md.version(name)) >= Version(floor), f"installed {name} is below the floor {floor}"
    # Optuna 5: Trial.set_constraint (the engine's constraint) and Study.set_metric_names.
    import optuna

    assert Version(floors["optuna"]) >= Version("5.0")
    assert hasattr(optuna.trial.Trial, "set_constraint") and hasattr(optuna.Study, "set_metric_names")
    # lm-eval: evaluate(samples=...) picks the documents of a chunk (lm-eval 0.4.8).
    from lm_eval.evaluator import evaluate

    assert "samples" in inspect.signature(evaluate).parameters
    assert Version(floors["lm-eval"]) >= Version("0.4.8")
    # transformers: dtype= in from_pretrained/from_config (4.56 renamed torch_dtype).
    assert Version(floors["transformers"]) >= Version("4.56")
    assert re.match(r"\d+\.\d+", md.version("transformers"))
