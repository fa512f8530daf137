"""Heartbeats: a worker says, every few seconds, that it is alive, so that others can tell when it died.

Ask/tell has no heartbeat of its own (Optuna records one only inside ``study.optimize``), so the sweeper records
it for the trials it has in flight. Each heartbeat is a context manager whose thread is joined on exit: no beat is
written after the block ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Optional

import optuna

log = logging.getLogger(__name__)


class Periodic:
    """Calls ``beat`` every ``interval`` seconds in a thread while the block runs; errors are logged, not raised
    (a storage hiccup must not end the sweep)."""

    def __init__(self, interval: float, beat: Callable[[], None], name: str = "sweeper-heartbeat") -> None:
        self._interval, self._beat = interval, beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def __enter__(self) -> Periodic:
        self._thread.start()
        return self

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._beat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)


class TrialHeartbeat(Periodic):
    """Records Optuna's heartbeat for every trial this worker has in flight."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float) -> None:
        super().__init__(interval, self._beat_all, name="optuna-heartbeat")
        self._storage = storage
        self._lock = threading.Lock()
        self._trial_ids: set[int] = set()

    def add(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.add(trial_id)
        self._storage.record_heartbeat(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self._trial_ids.discard(trial_id)

    def _beat_all(self) -> None:
        with self._lock:
            ids = list(self._trial_ids)
        for trial_id in ids:
            self._storage.record_heartbeat(trial_id)
