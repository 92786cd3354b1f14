"""``dse.decompose_model`` and ``dse.generate`` (the Python side of the CLI) and the checks made before any load."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import dse
from dse.cli import main
from space.config import DecompositionConfig
from space.metrics import parameter_report
from space.presets import load_spec


def test_decompose_model_reports_counts_and_saves(tmp_path: Path) -> None:
    out = tmp_path / "saved"
    result = dse.decompose_model("tiny-llama", layers=[1, 2], tensors=["q", "k"], rank=2, out=str(out),
                                 use_cache=False, progress=False)
    predicted = parameter_report(load_spec("tiny-llama"),
                                 DecompositionConfig(layers=(1, 2), tensors=("q", "k"), rank=2))
    assert (result["params_before"], result["params_after"]) == (predicted.params_before,
                                                                 predicted.params_after)
    assert result["gamma"] == {"layers": [1, 2], "tensors": ["q", "k"], "rank": 2}
    assert [(t["layer"], t["tensor"]) for t in result["per_tensor"]] == [(1, "q"), (1, "k"), (2, "q"), (2, "k")]
    assert (result["cache_hits"], result["cache_misses"]) == (0, 4)  # use_cache=False: all decomposed afresh
    assert result["out"] == str(out) and (out / "factors.safetensors").is_file()
    assert result["rank_convention"] == "absolute rank per tensor"


def test_generate_with_gamma_equals_generate_from_saved_dir(tmp_path: Path) -> None:
    gamma = DecompositionConfig(layers=(2,), tensors="all", rank=1)
    saved = dse.decompose_model("tiny-llama", gamma, out=str(tmp_path / "d"), use_cache=False, progress=False)
    direct = dse.generate("tiny-llama", gamma, prompt="The capital of France is", max_new_tokens=4,
                          compare=True, use_cache=False, progress=False)
    from_dir = dse.generate(saved["out"], prompt="The capital of France is", max_new_tokens=4, compare=True,
                            progress=False)
    assert direct["continuation"] == from_dir["continuation"]
    assert direct["original_continuation"] == from_dir["original_continuation"]
    assert direct["description"] == from_dir["description"] == "L[2] all r=1"
    assert from_dir["param_reduction_pct"] == pytest.approx(saved["param_reduction_pct"])
    original = dse.generate("tiny-llama", prompt="The capital of France is", max_new_tokens=4, progress=False)
    assert original["gamma"] is None and original["description"] == "original"
    assert original["continuation"] == direct["original_continuation"]


def _refuse_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_model(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("load_model was called before γ was checked")

    monkeypatch.setattr("dse.models.load_model", load_model)


@pytest.mark.parametrize("command", [
    ["decompose", "smollm2-135m", "--layers", "2,40"],
    ["generate", "smollm2-135m", "--layers", "40", "--prompt", "x"],
    ["evaluate", "smollm2-135m", "--layers", "40", "--limit", "5"],
    ["decompose", "smollm2-135m", "--layers", "all", "--tensors", "query"],
])
def test_gamma_is_checked_before_the_model_loads(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    _refuse_loading(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    if "query" in command:
        assert "unknown tensor 'query'" in lines[0]
    else:
        assert "layer 40 is out of range: smollm2-135m has 30 layers, allowed 0..29" in lines[0]


def test_python_api_checks_gamma_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse_loading(monkeypatch)
    with pytest.raises(dse.InvalidConfigError, match="layer 30 is out of range"):
        dse.decompose_model("smollm2-135m", DecompositionConfig(layers=(30,), tensors="all", rank=1))
    with pytest.raises(dse.InvalidConfigError, match="layer 30 is out of range"):
        dse.evaluate("smollm2-135m", layers=[30], limit=5)


OFFLINE_LINE = ("error: nobody-13b/not-cached is not a local path, and it is not in the Hugging Face cache while "
                "the hub is offline (HF_HUB_OFFLINE=1); allowed: a built-in name (smollm2-135m, tiny-llama), "
                "a local directory, or an HF id available in the cache")


@pytest.mark.parametrize("command", [
    ["decompose", "nobody-13b/not-cached", "--layers", "1"],
    ["generate", "nobody-13b/not-cached", "--prompt", "x"],
    ["evaluate", "nobody-13b/not-cached", "--layers", "1", "--limit", "5"],
])
def test_offline_hf_id_is_one_line(command: list[str], monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    _refuse_loading(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [OFFLINE_LINE]


def test_offline_hf_id_fails_at_once_in_a_real_process(tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 as a user sets it: no hub retries, one line, exit 2, within the CLI's start-up time."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "DSE_CACHE_DIR": str(tmp_path)}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "dse.cli", "decompose", "nobody-13b/not-cached", "--layers", "1"],
                          check=False, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [OFFLINE_LINE]
    assert elapsed < 20, f"took {elapsed:.1f} s"


def test_offline_hf_id_for_a_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    """``load_spec`` (the ``dse space`` commands) names the presets it accepts instead."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    with pytest.raises(dse.UnknownNameError, match=r"offline \(HF_HUB_OFFLINE=1\); allowed: a built-in name \("):
        load_spec("nobody-13b/not-cached")
