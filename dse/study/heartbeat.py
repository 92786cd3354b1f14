"""Optuna's heartbeat of a running trial, and each worker's own sampler seed.

Optuna records a trial's heartbeat (``RDBStorage.record_heartbeat``) in a thread only
inside ``study.optimize``; these workers drive Optuna with ask-and-tell, so they run the
same beat in a thread of their own while a trial runs. A trial whose beats stop is found
stale by ``optuna.storages.fail_stale_trials`` (:mod:`dse.study.reaper`).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from dse.study.storage import retrying

if TYPE_CHECKING:
    import optuna

__all__ = ["Heartbeat", "worker_seed"]

logger = logging.getLogger("dse.study")


class Heartbeat:
    """Optuna's heartbeat of one trial, recorded in a thread while the trial runs."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float) -> None:
        self._storage, self._trial_id, self._interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="dse-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                retrying(lambda: self._storage.record_heartbeat(self._trial_id))
            except Exception as exc:  # noqa: BLE001 - a missed beat is not fatal
                logger.debug("heartbeat failed: %s", exc)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def worker_seed(base: int | None, stream: int) -> int | None:
    """A seed of its own for each worker: the study's seed mixed with a stream drawn from the database."""
    if base is None:
        return None
    import numpy as np

    return int(np.random.SeedSequence([base, stream]).generate_state(1)[0])
