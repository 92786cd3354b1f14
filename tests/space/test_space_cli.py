"""``dse space``: JSON keys, numbers, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dse.cli import main

REPO = Path(__file__).resolve().parents[2]


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    main(["space", *args, "--json"])
    out = capsys.readouterr().out
    return json.loads(out)


def run_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(["space", *args])
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def test_size_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "size", "llama2-7b")
    assert report["size"] == 545_460_846_466
    assert round(report["log2_size"]) == 39
    assert report["pruned_size"] == 2_178_309
    assert report["log2_pruned_size"] == pytest.approx(21.05, abs=0.01)
    assert [e["rule"] for e in report["effects"]] == ["rank-one", "whole-layers", "skip-early",
                                                      "skip-late", "min-distance"]


def test_size_rules_options(capsys: pytest.CaptureFixture[str]) -> None:
    full = run_json(capsys, "size", "llama2-7b", "--no-rules")
    assert full["pruned_size"] == full["size"] and full["effects"] == []
    one = run_json(capsys, "size", "llama2-7b", "--no-rules", "--rule", "whole-layers")
    assert one["pruned_size"] == 2**32 and one["rules"] == ["whole-layers"]
    changed = run_json(capsys, "size", "llama2-7b", "--rule", "skip-early=3",
                       "--rule", "min-distance=off")
    assert changed["rules"] == ["rank-one=1", "whole-layers", "skip-early=3", "skip-late=0"]
    assert changed["pruned_size"] == 2**29


def test_size_rank_options(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "size", "smollm2-135m", "--rank", "300", "--no-rules")
    assert report["size"] == (2**30 - 1) * (31 * 300 + 96 * 192) + 1
    fixed = run_json(capsys, "size", "smollm2-135m", "--rank", "300", "--fixed-rank")
    # rank-one pins PR = 1 where PR = 300 was asked; whole-layers needs k (rank 192) too.
    assert fixed["pruned_candidates"] == 0
    assert fixed["empty_rules"] == ["rank-one=1", "whole-layers"]


def test_check_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "check", "llama2-7b", "--layers", "2,17,31", "--tensors", "all",
                      "--rank", "1")
    assert report["valid"] is True
    assert report["params_before"] == 6_738_415_616
    assert report["param_reduction_pct"] == pytest.approx(9.0, abs=0.1)
    assert report["params_after"] < report["params_before"]
    assert len(report["per_tensor"]) == 21
    assert report["per_tensor"][0]["compression_ratio"] == pytest.approx(4096 * 4096 / 8193)
    assert report["allowed_by_rules"] is True
    assert report["cost"]["macs_before"] / 1e9 == pytest.approx(850.0, abs=0.5)


def test_check_reports_rule_rejection(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "check", "llama2-7b", "--layers", "0,1", "--tensors", "q")
    assert report["valid"] is True and report["allowed_by_rules"] is False
    assert report["rule_reason"].startswith("whole-layers:")


def test_show_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "show", "smollm2-135m")
    assert report["n_layers"] == 30 and report["total_params"] == 134_515_008
    tensors = {t["name"]: t for t in report["tensors"]}
    assert (tensors["k"]["H"], tensors["k"]["W"], tensors["k"]["rank"]) == (192, 576, 192)
    assert tensors["q"]["max_compressing_rank"] == 238


def test_rules_json(capsys: pytest.CaptureFixture[str]) -> None:
    report = run_json(capsys, "rules")
    defaults = {r["name"]: r["default"] for r in report["rules"]}
    assert defaults == {"rank-one": 1, "whole-layers": None, "skip-early": 2, "skip-late": 0,
                        "min-distance": 2}


def test_tables_print(capsys: pytest.CaptureFixture[str]) -> None:
    main(["space", "check", "tiny-llama", "--layers", "2", "--rank", "4"])
    out = capsys.readouterr().out
    assert "valid" in out and "rejected by rank-one=1" in out
    main(["space", "size", "tiny-llama"])
    assert "1,906" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("show", "no-such-model"), "no-such-model is not a local path, and it is not in the Hugging Face cache"),
        (("check", "llama2-7b", "--layers", "40"), "layer 40 is out of range"),
        (("check", "llama2-7b", "--layers", "2", "--rank", "0"), "--rank must be at least 1"),
        (("check", "llama2-7b", "--layers", "2", "--rank", "5000"), "allowed 1..4096"),
        (("check", "llama2-7b", "--layers", "2", "--tensors", "query"), "unknown tensor 'query'"),
        (("check", "llama2-7b", "--layers", "2,,x"), "malformed layers list"),
        (("size", "llama2-7b", "--rule", "skip-erly=2"), "Did you mean 'skip-early'"),
        (("size", "llama2-7b", "--rule", "skip-early=two"), "bad value 'two' for rule skip-early"),
        (("size", "llama2-7b", "--rank", "0"), "allowed 1..4096"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                      fragment: str) -> None:
    line = run_error(capsys, *args)
    assert line.startswith("error: ") and fragment in line


def test_cached_spec_commands_do_not_import_torch(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from space.presets import load_spec

    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path))
    load_spec("llama2-7b")  # builds and caches the spec
    script = (
        "import sys, json\n"
        "from dse.cli import main\n"
        "main(['space', 'check', 'llama2-7b', '--layers', '2,17,31', '--json'])\n"
        "main(['space', 'size', 'llama2-7b', '--json'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy}))\n"
    )
    env = dict(os.environ, DSE_CACHE_DIR=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"heavy": []}


def test_import_space_is_torch_free() -> None:
    script = (
        "import sys, space\n"
        "assert space.RuleSet and space.space_size and space.parameter_report\n"
        "print([m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_dse_script_exit_code() -> None:
    dse = Path(sys.executable).with_name("dse")
    result = subprocess.run([str(dse), "space", "check", "llama2-7b", "--layers", "40"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "allowed 0..31" in result.stderr
