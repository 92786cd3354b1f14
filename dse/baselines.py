"""The one store of baseline records: the ``dse_baselines`` table of an engine database.

A baseline is the undecomposed model measured once under one set of measurement
settings, keyed by (model fingerprint, ``settings.accuracy_key()``); every trial's drop
is paired against it. A study keeps its baselines in its own database; ``dse evaluate``
keeps them in ``<cache>/baselines.db`` (the same tables), so a second evaluation of the
same model on the same documents does not measure the original model again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from dse.evaluation import BaselineRecord
from space.env import cache_dir

if TYPE_CHECKING:
    from dse.study.memo import EngineTables

__all__ = ["BASELINES_DB", "BaselineStore", "default_baselines_path"]

logger = logging.getLogger(__name__)

BASELINES_DB = "baselines.db"


def default_baselines_path() -> Path:
    """Where ``dse evaluate`` keeps its baselines: ``<cache>/baselines.db``."""
    return cache_dir() / BASELINES_DB


class BaselineStore:
    """Baseline records in the ``dse_baselines`` table of one database.

    ``BaselineStore()`` opens the default database (:func:`default_baselines_path`);
    a study passes the tables of its own database, :meth:`at` opens any storage URL.
    """

    def __init__(self, tables: EngineTables | None = None) -> None:
        if tables is None:
            path = default_baselines_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            tables = _open_tables(f"sqlite:///{path}")
        self.tables = tables

    @classmethod
    def at(cls, storage: str) -> BaselineStore:
        """The store in the database at ``storage`` (an SQLAlchemy URL), created if missing.

        Raises:
            StorageError: the URL is malformed or the database cannot be opened.
        """
        return cls(_open_tables(storage))

    def get(self, fingerprint: str, accuracy_key: str) -> BaselineRecord | None:
        """The stored baseline, or None (also for a record this version cannot read)."""
        stored = self.tables.baseline_get(fingerprint, accuracy_key)
        if stored is None:
            return None
        try:
            return BaselineRecord.model_validate(stored)
        except ValidationError as exc:
            logger.warning("stored baseline of %s is unreadable (%s); measuring again", fingerprint, exc)
            return None

    def put(self, record: BaselineRecord) -> None:
        """Keep ``record`` under its fingerprint and settings key (the first one stored stays)."""
        self.tables.baseline_put(record.fingerprint, record.settings_key, record.model_dump(mode="json"))


def _open_tables(storage: str) -> EngineTables:
    from dse.study.memo import EngineTables
    from dse.study.storage import check_storage

    return EngineTables(check_storage(storage, create=True))
