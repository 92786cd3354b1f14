"""Storage URLs and the engine's own tables: schema version, memo, baselines, budget and claims."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dse.study.memo import SCHEMA_VERSION, EngineTables
from dse.study.storage import DEFAULT_STORAGE, check_storage
from space.errors import StorageError


@pytest.fixture
def tables(tmp_path: Path) -> EngineTables:
    engine_tables = EngineTables(check_storage(f"sqlite:///{tmp_path / 'db.db'}", create=True))
    yield engine_tables
    engine_tables.close()


def test_default_storage_is_dse_db_in_the_working_directory(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    target = check_storage(None, create=True)
    assert DEFAULT_STORAGE == "sqlite:///dse.db"
    assert target.path == tmp_path / "dse.db" and target.is_sqlite
    assert not target.path.exists()


def test_server_urls_pass_through_unchanged() -> None:
    for url in ("postgresql://alice:secret@db.example/studies", "mysql+pymysql://bob@10.0.0.2:3306/dse"):
        target = check_storage(url, create=False)
        assert target.url == url and target.path is None
        assert "secret" not in target.display()
    with pytest.raises(StorageError, match="no host"):
        check_storage("postgresql:///studies", create=False)


def test_tables_are_prefixed_and_stamped_with_the_schema_version(tables: EngineTables, tmp_path: Path) -> None:
    names = {row[0] for row in sqlite3.connect(tmp_path / "db.db").execute("select name from sqlite_master "
                                                                           "where type='table'")}
    assert names == {"dse_schema", "dse_memo", "dse_baselines", "dse_budgets", "dse_claims"}
    assert tables.schema_version() == SCHEMA_VERSION == 1


def test_a_newer_schema_is_refused_with_the_upgrade(tables: EngineTables, tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "db.db") as conn:
        conn.execute("update dse_schema set version = 99")
    with pytest.raises(StorageError, match=r"schema 99.*pip install -U lowrank-dse"):
        EngineTables(check_storage(f"sqlite:///{tmp_path / 'db.db'}", create=False))


def _record(gamma_hash: str, drop: float, early: bool) -> dict[str, object]:
    return {"gamma_hash": gamma_hash, "gamma_label": "L[2]", "accuracy_drop_pp": drop, "early_stopped": early}


def test_memo_keys_and_early_stopped_records(tables: EngineTables) -> None:
    tables.memo_put("fp", "key", _record("g1", 1.0, False), tau=4.0, study_name="a")
    assert tables.memo_get("fp", "key", "g1", tau=None).record["accuracy_drop_pp"] == 1.0  # type: ignore[union-attr]
    assert tables.memo_get("fp", "other", "g1", tau=4.0) is None
    assert tables.memo_get("other", "key", "g1", tau=4.0) is None
    # Stopped early under τ = 4: surely above 4, hence above any smaller τ, but not a larger one.
    tables.memo_put("fp", "key", _record("g2", 12.0, True), tau=4.0, study_name="a")
    assert tables.memo_get("fp", "key", "g2", tau=3.0) is not None
    assert tables.memo_get("fp", "key", "g2", tau=6.0) is None
    # A full measurement replaces the early-stopped one, never the reverse.
    tables.memo_put("fp", "key", _record("g2", 11.0, False), tau=6.0, study_name="b")
    tables.memo_put("fp", "key", _record("g2", 13.0, True), tau=8.0, study_name="c")
    entry = tables.memo_get("fp", "key", "g2", tau=10.0)
    assert entry is not None and entry.record["accuracy_drop_pp"] == 11.0 and entry.study_name == "b"
    assert tables.memo_count() == 2


def test_baseline_is_stored_once(tables: EngineTables) -> None:
    tables.baseline_put("fp", "acc", {"accuracy": 0.5})
    tables.baseline_put("fp", "acc", {"accuracy": 0.9})
    assert tables.baseline_get("fp", "acc") == {"accuracy": 0.5}
    assert tables.baseline_get("fp", "other") is None


def test_budget_claims_are_exact_and_released_slots_return(tables: EngineTables) -> None:
    tables.set_target("s", target=3)
    claims = [tables.claim("s", f"w{i}") for i in range(5)]
    assert [c is not None for c in claims] == [True, True, True, False, False]
    tables.finish(claims[0])  # type: ignore[arg-type]
    tables.release(claims[1], "rejected")  # type: ignore[arg-type]
    assert tables.budget("s") == (3, 2)
    assert tables.claim("s", "w5") is not None and tables.claim("s", "w6") is None
    assert tables.set_target("s", more=2) == 5
    assert tables.claim_counts("s") == {"done": 1, "released": 1, "running": 2}


def test_stale_claims_are_reaped_once(tables: EngineTables) -> None:
    tables.set_target("s", target=2)
    claim = tables.claim("s", "dead")
    assert claim is not None
    tables.attach(claim, 7)
    assert tables.reap_stale("s", grace_seconds=3600) == []
    assert tables.reap_stale("s", grace_seconds=-1) == [7]
    assert tables.reap_stale("s", grace_seconds=-1) == []
    assert tables.budget("s") == (2, 0)
    assert not tables.heartbeat(claim)
    assert "stale" in tables.claim_notes("s")[7]
