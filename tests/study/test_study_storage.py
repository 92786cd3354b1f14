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
    assert names == {"dse_schema", "dse_memo", "dse_baselines", "dse_studies", "dse_pools", "dse_trial_claims",
                     "dse_gamma_claims", "dse_requeues",
                     "dse_trial_holders"}
    assert tables.schema_version() == SCHEMA_VERSION == 2


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
    budget = tables.budget
    budget.set_total("s", 3)
    claims = [budget.claim("s", "total", f"w{i}") for i in range(5)]
    assert [c is not None for c in claims] == [True, True, True, False, False]
    assert budget.end(claims[0].id, done=True)  # type: ignore[union-attr]
    assert budget.end(claims[1].id, done=False, note="rejected")  # type: ignore[union-attr]
    assert not budget.end(claims[1].id, done=False)  # type: ignore[union-attr]  # settled once
    assert budget.pool("s", "total") == (3, 2)
    assert budget.claim("s", "total", "w5") is not None and budget.claim("s", "total", "w6") is None
    assert budget.counts("s") == {"done": 1, "released": 1, "running": 2}


def test_each_resume_request_opens_its_own_pool(tables: EngineTables) -> None:
    budget = tables.budget
    budget.set_total("s", 1)
    pools = [budget.open_pool("s", 2) for _ in range(3)]
    assert len(set(pools)) == 3
    taken = [budget.claim("s", pool, "w") for pool in pools for _ in range(3)]
    assert sum(c is not None for c in taken) == 6  # 3 requests of 2: 6, whatever the order
    assert budget.pool("s", "total") == (1, 0)


def test_a_claim_attaches_once_and_not_after_it_was_released(tables: EngineTables) -> None:
    budget = tables.budget
    budget.set_total("s", 2)
    claim = budget.claim("s", "total", "w")
    assert claim is not None and budget.attach(claim, 7) == "attached" and budget.attach(claim, 8) != "attached"
    late = budget.claim("s", "total", "w")
    assert late is not None and budget.end(late.id, done=False, note="stale")
    assert budget.attach(late, 9) == "released"
    assert [c.trial_number for c in budget.running("s")] == [7]


def test_a_trial_handed_to_two_claims_runs_under_one(tables: EngineTables) -> None:
    # Optuna on SQLite can pop one queued trial in two processes at once: only one claim may hold it.
    budget = tables.budget
    budget.set_total("s", 2)
    first, second = budget.claim("s", "total", "a"), budget.claim("s", "total", "b")
    assert first is not None and second is not None
    assert budget.attach(first, 3) == "attached"
    assert budget.attach(second, 3) == "taken"
    assert [(c.id, c.trial_number) for c in budget.running("s")] == [(first.id, 3), (second.id, None)]


def test_a_gamma_is_measured_by_one_running_claim(tables: EngineTables) -> None:
    budget = tables.budget
    budget.set_total("s", 3)
    first, second = budget.claim("s", "total", "a"), budget.claim("s", "total", "b")
    assert first is not None and second is not None
    assert budget.claim_gamma("k", first) and budget.claim_gamma("k", first)
    assert not budget.claim_gamma("k", second)
    budget.end(first.id, done=False, note="died")
    assert budget.claim_gamma("k", second)


def test_creation_is_decided_once(tables: EngineTables) -> None:
    budget = tables.budget
    assert budget.studies.begin_creation("s", "a", stale_after=60) == "create"
    assert budget.studies.begin_creation("s", "b", stale_after=60) == "wait"
    assert budget.studies.begin_creation("s", "c", stale_after=-1) == "create"  # a dead creator is taken over
    budget.studies.mark_ready("s")
    assert budget.studies.begin_creation("s", "d", stale_after=60) == "ready"
    assert budget.studies.next_stream("s") != budget.studies.next_stream("s")
