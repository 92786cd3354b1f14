"""Faults as one line: query commands on a read-only database, an unusable cache directory, a full disk."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from study_fakes import FakeFactory

from dse.cli import main
from dse.study.api import list_studies, load_study, resume_study, run_study
from space.errors import StorageError


def _dse(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _fingerprint(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_query_commands_never_write(make_definition: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    definition = make_definition(n_trials=3)
    run_study(definition, evaluator_factory=FakeFactory(), progress=False, plots=False)
    db = Path(definition.storage.removeprefix("sqlite:///"))
    # A database from before the budget tables: queries must not create them.
    with sqlite3.connect(db) as conn:
        for table in ("dse_trial_claims", "dse_pools", "dse_studies", "dse_gamma_claims"):
            conn.execute(f"DROP TABLE {table}")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = _fingerprint(db.parent)
    plots = tmp_path.parent / f"{tmp_path.name}-plots"
    for args in (("list",), ("show", "tiny"), ("best", "tiny"), ("pareto", "tiny"), ("export", "tiny"),
                 ("plot", "tiny", "--out", str(plots))):
        code, _, err = _dse(capsys, "study", *args, "--storage", definition.storage)
        assert code == 0, (args, err)
    handle = load_study("tiny", storage=definition.storage)
    assert len(handle.trials()) == 3 and list_studies(storage=definition.storage)[0]["name"] == "tiny"
    assert _fingerprint(db.parent) == before  # not a byte written, no table created


def test_an_unusable_cache_directory_is_one_line_before_the_model_loads(
        make_definition: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import dse.models
    from dse.study.lifecycle import default_evaluator_factory

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("DSE_CACHE_DIR", str(blocker))

    def no_load(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the model was loaded before the cache directory was checked")

    monkeypatch.setattr(dse.models, "load_model", no_load)
    with pytest.raises(StorageError, match="is a file, not a directory"):
        default_evaluator_factory(make_definition())
    assert blocker.read_text() == "not a directory"  # never deleted or touched
    code, _, err = _dse(capsys, "cache", "info", "--cache-dir", str(blocker))
    assert code == 2 and err.count("\n") == 1 and "is a file" in err


def test_a_full_disk_mid_study_is_one_line_and_resume_completes(
        make_definition: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from dse.study.memo import EngineTables

    definition = make_definition(n_trials=4)
    original = EngineTables.memo_put
    calls = [0]

    def full(self: EngineTables, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:
            raise OperationalError("INSERT INTO dse_memo", {}, sqlite3.OperationalError("database or disk is full"))
        original(self, *args, **kwargs)

    monkeypatch.setattr(EngineTables, "memo_put", full)
    with pytest.raises(StorageError, match=r"disk is full.*stored trials are intact"):
        run_study(definition, evaluator_factory=FakeFactory(), progress=False, plots=False)
    rows = load_study("tiny", storage=definition.storage).trials()
    assert [r["state"] for r in rows].count("COMPLETE") == 1 and "RUNNING" not in [r["state"] for r in rows]
    monkeypatch.setattr(EngineTables, "memo_put", original)
    handle = resume_study("tiny", storage=definition.storage, evaluator_factory=FakeFactory(), progress=False,
                          plots=False)
    assert sum(r["state"] == "COMPLETE" and not r["rejected"] for r in handle.trials()) == 4
