"""`dse characterize` end to end on the real (random-weight) tiny-llama: JSON contract, figures, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dse.cli import main


def _dse(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_sweep_json_and_figures(capsys: pytest.CaptureFixture[str], storage_url: str, tmp_path: Path) -> None:
    args = ("characterize", "tiny-llama", "--sweep", "layers", "--tasks", "dse_arc_easy", "--limit", "4",
            "--no-efficiency", "--quiet", "--storage", storage_url)
    code, out, err = _dse(capsys, *args, "--json", "--plots", str(tmp_path / "fig"))
    assert code == 0, err
    result = json.loads(out)
    assert list(result)[:3] == ["schema_version", "sweep", "study"]
    assert result["sweep"] == "layers" and result["limit"] == 4 and result["tasks"] == ["dse_arc_easy"]
    points = result["points"]
    assert [p["layers"] for p in points] == [[0], [1], [2], [3]]
    for p in points:
        assert p["measured"] and p["rank"] == 1 and len(p["tensors"]) == 7
        low, high = p["drop_ci_pp"]
        assert low <= p["accuracy_drop_pp"] <= high
        task = p["per_task"]["dse_arc_easy"]
        assert task["n_docs"] == 4 and task["accuracy"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert p["param_reduction_pct"] > 0
    assert sorted(Path(f).name for f in result["plots"]) == ["layers.png", "layers.svg"]
    assert all(Path(f).stat().st_size > 1000 for f in result["plots"])
    # A rerun prints the stored points as a table, measuring nothing; the study is a study.
    code, out, _ = _dse(capsys, *args)
    assert code == 0 and "most harmful: layer " in out and "4 documents" in out
    code, out, _ = _dse(capsys, "study", "export", result["study"], "--storage", storage_url, "--json")
    assert code == 0 and len([r for r in json.loads(out)["trials"] if r["state"] == "COMPLETE"]) == 4


@pytest.mark.parametrize(("args", "message"), [
    (("--sweep", "width"), "'width' is not one of"),
    (("--sweep", "layers", "--limit", "0"), "--limit must be at least 1"),
    (("--sweep", "layers", "--tasks", "dse_arc_eazy"), "dse_arc_eazy"),
    (("--sweep", "distance"), "needs five layers"),
])
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], storage_url: str,
                                           args: tuple[str, ...], message: str) -> None:
    code, out, err = _dse(capsys, "characterize", "tiny-llama", *args, "--storage", storage_url, "--quiet")
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err
