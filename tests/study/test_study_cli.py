"""``dse study``: JSON contracts of the query commands, and every bad input as one line, exit 2."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from study_fakes import FakeFactory

from dse.cli import main
from dse.study.api import run_study

EXPORT_KEYS = {"number", "state", "feasible", "memoized", "gamma", "accuracy_drop_pp", "edp_ratio",
               "latency_ratio", "energy_ratio", "param_reduction_pct"}


def _dse(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def stored(make_definition) -> Any:  # type: ignore[no-untyped-def]
    definition = make_definition(n_trials=6)
    run_study(definition, evaluator_factory=FakeFactory(), progress=False, plots=False)
    return definition


def test_export_json_is_one_object_per_trial(stored, capsys) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _dse(capsys, "study", "export", "tiny", "--format", "json", "--storage", stored.storage)
    rows = json.loads(out)
    assert code == 0 and len(rows) == 6
    for row in rows:
        assert set(row) >= EXPORT_KEYS
        assert row["state"] == "COMPLETE"
        assert set(row["gamma"]) == {"layers", "tensors", "rank"}
    code, out, _ = _dse(capsys, "study", "export", "tiny", "--json", "--storage", stored.storage)
    assert json.loads(out) == {"schema_version": 1, "name": "tiny", "trials": rows}


def test_export_csv_flattens_gamma_and_tasks(stored, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _dse(capsys, "study", "export", "tiny", "--storage", stored.storage)
    table = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(table) == 6
    assert {"gamma_layers", "dse_arc_easy.accuracy", "dse_piqa.drop_pp", "edp_ratio"} <= set(table[0])
    target = tmp_path / "trials.csv"
    code, out, _ = _dse(capsys, "study", "export", "tiny", "--out", str(target), "--json", "--storage", stored.storage)
    assert code == 0 and json.loads(out) == {"schema_version": 1, "name": "tiny", "path": str(target), "trials": 6}
    assert target.read_text().count("\n") == 7


def test_best_pareto_show_list_plot(stored, capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    code, out, _ = _dse(capsys, "study", "best", "tiny", "--json", "--storage", stored.storage)
    best = json.loads(out)
    assert best["schema_version"] == 1 and best["name"] == "tiny"
    best = best["best"]
    assert code == 0 and set(best) >= EXPORT_KEYS and best["feasible"] and best["accuracy_drop_pp"] < 4.0

    code, out, _ = _dse(capsys, "study", "pareto", "tiny", "--x", "param_reduction_pct", "--y", "accuracy_drop_pp",
                        "--json", "--storage", stored.storage)
    payload = json.loads(out)
    assert payload["metrics"] == ["param_reduction_pct", "accuracy_drop_pp"] and payload["feasible_only"]
    front = payload["trials"]
    assert code == 0 and front and all(r["feasible"] for r in front)
    code, out, _ = _dse(capsys, "study", "pareto", "tiny", "--x", "param_reduction_pct", "--y", "accuracy_drop_pp",
                        "--all", "--json", "--storage", stored.storage)
    assert len(json.loads(out)["trials"]) >= len(front)

    code, out, _ = _dse(capsys, "study", "show", "tiny", "--json", "--storage", stored.storage)
    summary = json.loads(out)
    assert summary["counts"]["complete"] == 6 and summary["baseline"]["accuracy"] == pytest.approx(0.65)
    assert summary["definition"]["tau"] == 4.0 and summary["best"]["number"] == best["number"]

    code, out, _ = _dse(capsys, "study", "list", "--json", "--storage", stored.storage)
    listed = json.loads(out)["studies"]
    assert [s["name"] for s in listed] == ["tiny"] and listed[0]["counts"]["complete"] == 6

    code, out, _ = _dse(capsys, "study", "plot", "tiny", "--out", str(tmp_path / "figs"), "--json",
                        "--storage", stored.storage)
    plots = [Path(p) for p in json.loads(out)["plots"]]
    assert code == 0 and {p.name for p in plots} == {"pareto.png", "accuracy_per_task.png", "efficiency.png",
                                                     "history.png", "optuna_history.png"}
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in plots)

    code, out, _ = _dse(capsys, "study", "show", "tiny", "--storage", stored.storage)
    assert code == 0 and "Best feasible configuration" in out


def _one_error(code: int, out: str, err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert out == ""
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unknown_study_lists_the_existing_ones(stored, capsys) -> None:  # type: ignore[no-untyped-def]
    for command in ("show", "best", "export", "pareto", "resume"):
        _one_error(*_dse(capsys, "study", command, "nope", "--storage", stored.storage),
                   "unknown study 'nope'", "studies there: tiny")


def _snapshot(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


@pytest.mark.parametrize(
    ("url", "needle", "query_needle"),
    [
        ("not a url", "malformed storage URL", None),
        ("sqlite//dse.db", "malformed storage URL", None),
        ("oracle://host/db", "unsupported storage URL", None),
        ("sqlite:////proc/dse-test.db", "not writable", "no study database"),
        ("sqlite:///{tmp}/no/such/dir/x.db", "does not exist", "no study database"),
        ("sqlite:///{tmp}/garbage.db", "not an SQLite database", None),
        ("sqlite:///{tmp}", "is a directory", None),
    ],
)
def test_bad_storage_is_one_line_and_touches_nothing(capsys, tmp_path: Path, url: str, needle: str,  # type: ignore[no-untyped-def]
                                                     query_needle: str | None) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 10)
    before = sorted(p.name for p in tmp_path.iterdir())
    url = url.format(tmp=tmp_path)
    _one_error(*_dse(capsys, "study", "run", "--model", "tiny-llama", "--storage", url, "--no-plots"), needle)
    # Queries never create a database: a missing one is its own error.
    _one_error(*_dse(capsys, "study", "list", "--storage", url), query_needle or needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert garbage.read_bytes() == b"this is not a database\n" * 10
    assert not Path("/proc/dse-test.db").exists()


def test_missing_database_is_not_created_by_queries(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'absent.db'}"
    for args in (("list",), ("show", "x"), ("export", "x")):
        _one_error(*_dse(capsys, "study", *args, "--storage", url), "no study database")
    assert list(tmp_path.iterdir()) == []


def test_study_file_problems_are_one_line_each(capsys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.toml"
    path.write_text('tau = "x"\ncolour = "red"\n[evaluation]\nlimit = 0\n')
    code, out, err = _dse(capsys, "study", "run", str(path), "--storage", f"sqlite:///{tmp_path / 'db.db'}")
    lines = err.strip().splitlines()
    assert code == 2 and out == ""
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert {line.split(":")[1].strip() for line in lines} == {"tau", "colour", "evaluation.limit"}
    assert not (tmp_path / "db.db").exists()


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (("--tau", "-1"), ("tau", "finite number in (0, 100]")),
        (("--n-trials", "0"), ("n_trials", "greater than or equal to 1")),
        (("--rule", "skip-early=4"), ("skip-early=4", "nothing to decompose")),
        (("--rule", "skip-early=1", "--rule", "skip-late=3"), ("skip-early=1", "skip-late=3")),
        (("--sampler", "cma"), ("unknown sampler 'cma'",)),
        (("--limit", "0"), ("limit",)),
        (("--rule", "frobnicate"), ("unknown rule 'frobnicate'",)),
    ],
)
def test_bad_flags_are_one_line_and_write_no_database(capsys, tmp_path: Path, args: tuple[str, ...],  # type: ignore[no-untyped-def]
                                                      needles: tuple[str, ...]) -> None:
    db = tmp_path / "db.db"
    _one_error(*_dse(capsys, "study", "run", "--model", "tiny-llama", "--storage", f"sqlite:///{db}", *args),
               *needles)
    assert not db.exists()


def test_changed_definition_on_the_cli_is_refused_and_the_study_untouched(stored, capsys) -> None:  # type: ignore[no-untyped-def]
    db = Path(stored.storage.removeprefix("sqlite:///"))
    before = db.read_bytes()
    code, out, err = _dse(capsys, "study", "run", "--name", "tiny", "--model", "tiny-llama", "--tau", "2",
                          "--storage", stored.storage, "--no-plots")
    _one_error(code, out, err, "exists with another definition", "tau: 4.0 -> 2.0", "--force")
    assert db.read_bytes() == before
    _one_error(*_dse(capsys, "study", "resume", "tiny", "--n-trials", "0", "--storage", stored.storage),
               "--n-trials must be at least 1")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--tasks", "dse_arc_esay"), "dse_arc_esay"),
        (("--data-dir", "/nonexistent/data"), "/nonexistent/data"),
        (("--device", "cuda"), "no CUDA device"),
        (("--model", "no-such-model-xyz"), "no-such-model-xyz"),
    ],
)
def test_bad_tasks_data_device_model_fail_before_the_database(capsys, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                              args: tuple[str, ...], needle: str) -> None:
    if "cuda" in args:
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a CUDA device")
    db = tmp_path / "db.db"
    base = ["study", "run", "--model", "tiny-llama", "--storage", f"sqlite:///{db}", "--no-plots"]
    _one_error(*_dse(capsys, *base, *args), needle)
    assert not db.exists()
