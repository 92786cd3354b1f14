"""One device check, one task-list check: every caller refuses bad input with the same line."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from dse.evaluation import MeasurementSettings
from dse.models import load_model
from dse.study.definition import EvaluationSection, StudyDefinition
from objectives.accuracy import AccuracyObjective
from objectives.devices import check_device, check_device_name
from objectives.tasks import task_list
from space.errors import InvalidConfigError

UNKNOWN = "unknown device 'tpu'; allowed: cpu, cuda, cuda:N"


@pytest.mark.parametrize("name", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_accepted(name: str) -> None:
    assert check_device_name(name) == name


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cpu:1", "CUDA", "cuda:", " cpu", ""])
def test_device_names_refused(name: str) -> None:
    with pytest.raises(InvalidConfigError, match=r"^unknown device .*; allowed: cpu, cuda, cuda:N$"):
        check_device_name(name)


def test_every_caller_gives_the_same_device_message() -> None:
    with pytest.raises(InvalidConfigError) as direct:
        check_device("tpu")
    with pytest.raises(InvalidConfigError) as loading:
        load_model("tiny-llama", device="tpu")
    with pytest.raises(ValidationError) as definition:
        StudyDefinition.model_validate({"device": "tpu"})
    assert str(direct.value) == str(loading.value) == UNKNOWN
    assert UNKNOWN in str(definition.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without CUDA")
def test_missing_gpu_is_the_same_line_for_loading_and_measuring() -> None:
    with pytest.raises(InvalidConfigError) as direct:
        check_device("cuda:1")
    with pytest.raises(InvalidConfigError) as loading:
        load_model("tiny-llama", device="cuda:1")
    assert str(direct.value) == str(loading.value)
    assert str(direct.value) == "--device cuda:1 was asked for, but no CUDA device is available: use --device cpu"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("dse_piqa", ("dse_piqa",)),
        (" dse_piqa , dse_arc_easy,", ("dse_piqa", "dse_arc_easy")),
        (["dse_arc_easy", "arc_easy"], ("dse_arc_easy", "arc_easy")),
    ],
)
def test_task_lists(given: str | list[str], expected: tuple[str, ...]) -> None:
    assert task_list(given) == expected


@pytest.mark.parametrize(("given", "message"), [("", "no tasks given; local tasks: dse_arc_challenge"),
                                                ([" "], "no tasks given"),
                                                ("a,b,a", "task(s) a given twice; name each task once")])
def test_bad_task_lists_are_refused_alike_everywhere(given: str | list[str], message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        task_list(given)
    listed = given.split(",") if isinstance(given, str) else given
    with pytest.raises(InvalidConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AccuracyObjective(listed)
    for build in (lambda: EvaluationSection(tasks=given), lambda: MeasurementSettings(tasks=tuple(listed))):
        with pytest.raises(ValidationError) as refused:
            build()
        assert message in str(refused.value)
