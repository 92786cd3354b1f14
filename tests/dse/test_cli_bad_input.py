"""Bad input reported by users: one line naming what is wrong and what is allowed, exit 2, no traceback.

Each case fails before a model loads or a database is written (a stored study is left intact).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dse.cli import main


def _dse(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    err = capsys.readouterr().err
    return int(exit_info.value.code or 0), err


def _one_line(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["decompose", "evaluate"])
def test_an_empty_name_in_a_tensor_list_is_refused(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line(*_dse(capsys, command, "tiny-llama", "--layers", "1", "--tensors", "q,,k"))
    assert "malformed tensor list 'q,,k'" in line and "q,k,v or all" in line


@pytest.mark.parametrize("command", ["decompose", "evaluate"])
def test_an_empty_layers_option_is_refused(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    line = _one_line(*_dse(capsys, command, "tiny-llama", "--layers", " "))
    assert "--layers" in line and "is empty" in line and "2,17,29" in line


@pytest.mark.parametrize("tau", ["nan", "inf", "0", "200"])
def test_a_tau_outside_its_range_names_the_range(tau: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    line = _one_line(*_dse(capsys, "study", "run", "--model", "tiny-llama", "--tau", tau, "--n-trials", "1",
                           "--storage", f"sqlite:///{db}"))
    assert "finite number in (0, 100]" in line, line
    assert not db.exists()  # nothing written


def test_a_study_name_with_a_trailing_newline_is_refused(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    line = _one_line(*_dse(capsys, "study", "run", "--model", "tiny-llama", "--name", "tiny\n", "--n-trials", "1",
                           "--storage", f"sqlite:///{db}"))
    assert "study name 'tiny\\n' is not allowed" in line
    assert not db.exists()


def test_cache_info_on_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    line = _one_line(*_dse(capsys, "cache", "info", "--cache-dir", str(afile)))
    assert "is a file, not a directory" in line
    assert afile.read_text() == "not a directory"  # never deleted or overwritten


def test_a_stored_study_survives_a_refused_tau(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    sqlite3.connect(db).execute("create table keep (x)").connection.commit()
    _one_line(*_dse(capsys, "study", "resume", "x", "--storage", f"sqlite:///{db}", "--timeout", "nan"))
    assert sqlite3.connect(db).execute("select name from sqlite_master").fetchall() == [("keep",)]
