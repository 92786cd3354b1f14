"""Figures a researcher would publish: formats, dpi, caption, error bars, trial numbers, task names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from study_fakes import FakeFactory

from dse.study.api import run_study
from dse.study.plots import caption_line, paper_task_name
from space.errors import InvalidConfigError


@pytest.fixture
def handle(make_definition) -> Any:  # type: ignore[no-untyped-def]
    return run_study(make_definition(n_trials=6), evaluator_factory=FakeFactory(), progress=False, plots=False)


def test_paper_task_names() -> None:
    assert [paper_task_name(t) for t in ("dse_arc_easy", "dse_arc_challenge", "dse_piqa", "dse_lambada", "x")] == [
        "ARC-e", "ARC-c", "PIQA", "LAMBADA", "x"]


def test_caption_names_model_documents_device_and_energy(handle) -> None:  # type: ignore[no-untyped-def]
    caption = caption_line(handle.definition, handle.trials())
    assert caption.startswith("tiny-llama (float32) on cpu; ARC-e, PIQA; first 5 documents per task; energy: ")
    assert "τ = 4 pp" in caption


@pytest.mark.parametrize(("fmt", "magic"), [("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_vector_formats(handle, tmp_path: Path, fmt: str, magic: bytes) -> None:  # type: ignore[no-untyped-def]
    paths = handle.plot(tmp_path, fmt=fmt)
    assert {p.suffix for p in paths} == {f".{fmt}"} and len(paths) == 5
    assert all(p.read_bytes().startswith(magic) for p in paths)
    svg = (tmp_path / "pareto.svg").read_text() if fmt == "svg" else ""
    if svg:
        # The caption, the CI label and the paper's task names are text in the figures.
        assert "<!-- accuracy drop (pp), 95% CI -->" in svg and "first 5 documents per task" in svg
        assert "<!-- ARC-e -->" in (tmp_path / "accuracy_per_task.svg").read_text()


def test_dpi_sets_the_png_size(handle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    low = handle.plot(tmp_path / "low", dpi=50)[0]
    high = handle.plot(tmp_path / "high", dpi=100)[0]
    assert Image.open(high).size[0] == 2 * Image.open(low).size[0]


def test_bad_format_and_dpi_are_one_line_errors(handle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidConfigError, match="allowed: png, pdf, svg"):
        handle.plot(tmp_path, fmt="jpg")
    with pytest.raises(InvalidConfigError, match="dpi"):
        handle.plot(tmp_path, dpi=0)
