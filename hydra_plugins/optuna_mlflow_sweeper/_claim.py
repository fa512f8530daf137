"""The final-stage claim: exactly one worker runs a study's final stage for its best trial.

The claim is the creation of a small marker study, which the storage makes atomic (a unique name): the worker that
creates ``<study>::final-trial-<n>::attempt-<k>`` runs the stage, the others see the marker and stop. A claim whose
worker died (no keep-alive for the grace period, or a dead process on this host) is superseded by the next attempt's
marker, again created atomically. Once the stage is done and recorded in the user's study, the markers are deleted:
they would otherwise show up in optuna-dashboard as empty studies beside the user's.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Optional

import optuna

from ._errors import SweeperError
from ._heartbeat import Periodic
from ._output import say
from ._worker import Worker

MAX_ATTEMPTS = 100


def marker_name(study_name: str, number: int, attempt: int) -> str:
    return f"{study_name}::final-trial-{number}::attempt-{attempt}"


def acquire(storage: optuna.storages.BaseStorage, study_name: str, number: int, worker: Worker,
            grace_period: float) -> Optional[optuna.Study]:
    """The marker study if this worker holds the claim now, None if another worker holds it or finished it."""
    for attempt in range(MAX_ATTEMPTS):
        name = marker_name(study_name, number, attempt)
        try:
            marker = optuna.create_study(study_name=name, storage=storage)
        except optuna.exceptions.DuplicatedStudyError:
            info = _info(storage, name, grace_period)
            if info is None:
                continue  # deleted meanwhile: its holder finished (the caller checks the study's record)
            if info.get("done"):
                return None
            if not info.get("failed") and not _stale(info, worker, grace_period):
                host = (info.get("worker") or {}).get("host", "?")
                say(f"another worker ({host}) runs the final stage of trial {number}: this one stops here")
                return None
            continue
        marker.set_user_attr("worker", worker.as_attr())
        marker.set_user_attr("heartbeat", time.time())
        return marker
    raise SweeperError(f"the final stage of study {study_name!r} failed {MAX_ATTEMPTS} times: see its marker studies")


def _info(storage: optuna.storages.BaseStorage, name: str, grace_period: float) -> Optional[dict]:
    """The claim's record (None if the marker is gone), read once it is whole: its holder writes the worker, then
    the heartbeat, and a record read between the two has no heartbeat, which is not a stale one. A record still not
    whole after the grace period belongs to a worker that died while writing it."""
    deadline = time.monotonic() + grace_period
    while True:
        try:
            info = storage.get_study_user_attrs(storage.get_study_id_from_name(name))
        except KeyError:
            return None
        if "heartbeat" in info:
            return info
        if time.monotonic() > deadline:
            return {**info, "heartbeat": 0.0}
        time.sleep(0.5)


def _stale(info: dict, worker: Worker, grace_period: float) -> bool:
    if worker.sees_gone(info.get("worker")):
        return True
    return time.time() - float(info.get("heartbeat", 0.0)) > grace_period


@contextlib.contextmanager
def keepalive(marker: optuna.Study, interval: float) -> Iterator[None]:
    """While the stage runs, the marker says its worker is alive."""
    with Periodic(interval, lambda: marker.set_user_attr("heartbeat", time.time()), name="final-stage-claim"):
        yield


def release(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> None:
    """Delete the markers of a finished claim (every attempt, including those of workers that died)."""
    prefix = marker_name(study_name, number, 0).rsplit("::attempt-", 1)[0] + "::attempt-"
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name.startswith(prefix):
            with contextlib.suppress(KeyError):
                optuna.delete_study(study_name=summary.study_name, storage=storage)
