"""lm-eval interplay: its results and samples files from `dse evaluate`, and standard task names offline."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from dse.cli import main
from objectives.accuracy import AccuracyObjective
from objectives.tasks.aliases import STANDARD_TO_LOCAL, resolve_offline
from space.errors import InvalidConfigError


def test_output_path_writes_lm_eval_results_and_samples(tmp_path: Path, data_dir: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "lm-eval"
    main(["evaluate", "tiny-llama", "--layers", "1,3", "--tasks", "dse_arc_easy,dse_piqa", "--limit", "4",
          "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"), "--output-path", str(out_dir),
          "--log-samples", "--json"])
    result = json.loads(capsys.readouterr().out)
    files = result["lm_eval_output"]
    for which in ("original", "decomposed"):
        run = Path(files[which]["dir"])
        results = [p for p in run.iterdir() if p.name.startswith("results_") and p.suffix == ".json"]
        samples = {p.name.split("_20")[0] for p in run.iterdir() if p.name.startswith("samples_")}
        assert len(results) == 1 and samples == {"samples_dse_arc_easy", "samples_dse_piqa"}
        stored = json.loads(results[0].read_text())
        assert set(stored["results"]) == {"dse_arc_easy", "dse_piqa"}  # lm-eval's own schema
        lines = (run / next(p.name for p in run.iterdir() if p.name.startswith("samples_dse_piqa"))).read_text()
        assert len(lines.strip().splitlines()) == 4  # one JSON line per document
    # lm-eval's accuracies are the ones dse reports, for both models.
    for task in ("dse_arc_easy", "dse_piqa"):
        assert files["decomposed"]["accuracy"][task] == pytest.approx(result["per_task"][task]["accuracy"], abs=1e-12)
        assert files["original"]["accuracy"][task] == pytest.approx(
            result["per_task"][task]["baseline_accuracy"], abs=1e-12)
    assert Path(files["original"]["dir"]) != Path(files["decomposed"]["dir"])


def test_log_samples_needs_an_output_path(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "tiny-llama", "--log-samples"])
    assert exit_info.value.code == 2
    assert "--output-path" in capsys.readouterr().err


def test_standard_names_run_as_local_copies_offline(monkeypatch: pytest.MonkeyPatch, data_dir: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="dse"):
        objective = AccuracyObjective(["arc_easy", "dse_piqa"], limit=2, data_dir=data_dir)
    assert objective.tasks == ("dse_arc_easy", "dse_piqa")
    notes = [r.getMessage() for r in caplog.records if "local copy" in r.getMessage()]
    assert len(notes) == 1 and "'arc_easy'" in notes[0] and "'dse_arc_easy'" in notes[0]
    with pytest.raises(InvalidConfigError, match="given twice"):
        AccuracyObjective(["arc_easy", "dse_arc_easy"], data_dir=data_dir)


def test_online_names_stay_as_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    assert resolve_offline(["arc_easy", "piqa"]) == ["arc_easy", "piqa"]
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
    assert resolve_offline(["arc_easy", "piqa", "gsm8k"]) == ["dse_arc_easy", "dse_piqa", "gsm8k"]


def test_every_alias_names_a_local_task() -> None:
    from objectives.tasks import LOCAL_TASKS

    assert set(STANDARD_TO_LOCAL.values()) <= set(LOCAL_TASKS)
