"""Baselines: one store (the ``dse_baselines`` table) for ``dse evaluate`` and studies alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from dse.baselines import BaselineStore, default_baselines_path
from dse.evaluation import BaselineRecord
from dse.study.memo import EngineTables
from dse.study.storage import check_storage


def _record(fingerprint: str = "fp1", key: str = "k1", accuracy: float = 0.5) -> BaselineRecord:
    return BaselineRecord(
        model="tiny-llama", fingerprint=fingerprint, settings_key=key, accuracy=accuracy,
        per_task={"dse_piqa": accuracy}, accuracy_measurement={"tasks": {}}, latency_s=0.25, params=1234,
        versions={"torch": "x"}, seconds=1.5,
    )


def test_round_trip_and_first_record_stays(tmp_path: Path) -> None:
    store = BaselineStore.at(f"sqlite:///{tmp_path / 'b.db'}")
    assert store.get("fp1", "k1") is None
    store.put(_record())
    store.put(_record(accuracy=0.9))  # a second writer of the same baseline does not replace it
    again = BaselineStore.at(f"sqlite:///{tmp_path / 'b.db'}").get("fp1", "k1")
    assert again == _record()
    assert store.get("fp1", "other-key") is None
    assert store.get("fp2", "k1") is None


def test_default_database_is_in_the_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSE_CACHE_DIR", str(tmp_path / "cache"))
    assert default_baselines_path() == tmp_path / "cache" / "baselines.db"
    BaselineStore().put(_record())
    assert BaselineStore().get("fp1", "k1") == _record()
    assert (tmp_path / "cache" / "baselines.db").is_file()


def test_a_study_database_shares_the_same_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    tables = EngineTables(check_storage(url, create=True))
    BaselineStore(tables).put(_record())
    # What a study reads through its tables is what `dse evaluate --storage` would read.
    assert tables.baseline_get("fp1", "k1") == _record().model_dump(mode="json")
    assert BaselineStore.at(url).get("fp1", "k1") == _record()


def test_an_unreadable_record_is_measured_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'b.db'}"
    tables = EngineTables(check_storage(url, create=True))
    tables.baseline_put("fp1", "k1", {"model": "tiny-llama"})  # e.g. written by another version
    assert BaselineStore(tables).get("fp1", "k1") is None
