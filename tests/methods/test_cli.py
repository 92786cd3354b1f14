"""``dse decompose --keep --method``: the JSON a script reads, the counts, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from space.config import DecompositionConfig
from space.metrics import parameter_report
from space.presets import load_spec
from tests.dse.test_decompose_cli import run_error, run_json


def test_decompose_keep_with_svd_llm(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = tmp_path / "valid.txt"
    text.write_text(" ".join(f"Sentence number {i} of the held-out text." for i in range(300)))
    args = ["decompose", "tiny-llama", "--layers", "all", "--keep", "0.5", "--method", "svd-llm",
            "--calibration-source", str(text), "--calibration-sequences", "3",
            "--calibration-length", "32", "--cache-dir", str(tmp_path), "--json"]
    result = run_json(capsys, args)
    spec = load_spec("tiny-llama")
    expected = parameter_report(spec, DecompositionConfig(layers=tuple(range(spec.n_layers)), keep=0.5,
                                                          method="svd-llm"))
    assert result["params_after"] == expected.params_after  # the form installed is the form counted
    assert result["fold"] is True and result["method"] == "svd-llm"
    assert "kept-parameter ratio" in result["rank_convention"]
    assert result["gamma"]["keep"] == 0.5
    assert {t["method"] for t in result["per_tensor"]} == {"svd-llm"}


@pytest.mark.parametrize(("args", "message"), [
    (["--layers", "1", "--keep", "0"], r"--keep must be in \(0, 1\]"),
    (["--layers", "1", "--keep", "0.5", "--rank", "2"], "exclusive"),
    (["--layers", "1", "--keep", "0.5", "--method", "asvd", "--calibration-source", "/no/such.txt"],
     "does not exist"),
    (["--layers", "1", "--keep", "0.5", "--method", "feature", "--calibration-source",
      "x/wikitext2/test.txt"], "test split"),
])
def test_bad_method_inputs_are_one_line(capsys: pytest.CaptureFixture[str], args: list[str],
                                         message: str) -> None:
    line = run_error(capsys, ["decompose", "tiny-llama", *args])
    assert pytest.importorskip("re").search(message, line), line
