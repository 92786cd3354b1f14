"""Baselines kept between runs of ``dse evaluate``: one JSON file per (fingerprint, accuracy key).

Studies keep theirs in the study database; this store serves the one-off command, so a
second ``dse evaluate`` of the same model on the same documents does not measure the
undecomposed model again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dse.evaluation import BaselineRecord
from space.env import cache_dir

__all__ = ["BaselineStore"]

logger = logging.getLogger(__name__)


class BaselineStore:
    """Baseline records as JSON files under ``<cache>/baselines``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else cache_dir() / "baselines"

    def _path(self, fingerprint: str, accuracy_key: str) -> Path:
        return self.root / f"{fingerprint}-{accuracy_key}.json"

    def get(self, fingerprint: str, accuracy_key: str) -> BaselineRecord | None:
        path = self._path(fingerprint, accuracy_key)
        if not path.is_file():
            return None
        try:
            return BaselineRecord.model_validate_json(path.read_text())
        except ValueError as exc:
            logger.warning("stored baseline %s is unreadable (%s); measuring again", path, exc)
            return None

    def put(self, record: BaselineRecord) -> None:
        path = self._path(record.fingerprint, record.settings_key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(record.model_dump_json())
            tmp.replace(path)
        except OSError as exc:
            logger.warning("could not store the baseline at %s (%s)", path, exc)
