"""MLflow bookkeeping: the study's one parent run, a nested run per trial, and their statuses.

Invariants:
- a study has one parent run: it is recorded in the study (``PARENT_ATTR``) and reused by every later invocation and
  every worker; a new one is made only when the recorded run no longer exists in this experiment;
- every trial's run is created before its job starts, nested under the parent, and linked both ways (the trial's
  ``RUN_ATTR``, the run's ``optuna.trial_number`` tag);
- an unreachable tracking server raises TrackingDown at once, so that the sweep can stop and be repaired later.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Optional

import optuna
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ._context import PARENT_ATTR
from ._errors import SweeperError, TrackingDown, one_line
from ._redact import redact
from ._stores import is_integrity_race, is_unreachable, limit_http_retries

SWEEP, TRIAL = "hyperparameter_sweep", "hyperparameter_tuning"  # tag run_purpose (the final stage's is a setting)


class RunStatus(StrEnum):
    """MLflow's run statuses as the sweeper sets them (MLflow takes their names)."""

    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"
log = logging.getLogger(__name__)


# MLflow writes a tag by reading it, then inserting or updating: two workers writing a tag the run does not have
# yet (the parent's description, as each worker ends) can both insert, and the later one fails on the unique key.
# Written again, the tag exists and is updated: the write is an upsert, so once more is safe.
RACED_UPSERTS = frozenset({"set_tag", "log_batch"})


class GuardedClient:
    """An MlflowClient whose calls raise TrackingDown when the server is unreachable (not after minutes of retries
    and tracebacks), and whose tag writes survive another worker writing the same new tag at the same moment."""

    def __init__(self, uri: str) -> None:
        limit_http_retries()
        self._client, self._uri = MlflowClient(uri), uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            for again in (False, True):
                try:
                    return attr(*args, **kwargs)
                except Exception as exc:
                    if is_unreachable(exc):
                        raise TrackingDown(f"the tracking server at {redact(self._uri)} stopped answering") from None
                    if again or name not in RACED_UPSERTS or not is_integrity_race(exc):
                        raise
            raise AssertionError("unreachable")  # the loop returns or raises

        return call


@dataclass(kw_only=True)
class Runs:
    """The sweep's MLflow side: where runs go and the tags every run carries."""

    client: Any  # GuardedClient
    experiment_id: str
    parent_id: str
    tags: Mapping[str, str] = field(default_factory=dict)
    down: bool = False  # set once the server is gone: no more calls (each would wait for it again)

    def create_child(self, run_name: str, purpose: str, study_name: str, number: int,
                     extra: Optional[Mapping[str, str]] = None) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={
            **self.tags, **(extra or {}), "mlflow.parentRunId": self.parent_id, "run_purpose": purpose,
            "optuna.study_name": study_name, "optuna.trial_number": str(number)})
        return run.info.run_id

    def end(self, run_id: str, status: RunStatus, tags: Mapping[str, str]) -> None:
        """Set the sweeper's verdict on a run; a run its job already ended keeps its own status."""
        if self.down:
            return
        try:
            self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            if self.client.get_run(run_id).info.status == RunStatus.RUNNING:
                self.client.set_terminated(run_id, status=status)
        except TrackingDown:
            raise
        except Exception as exc:
            log.warning("could not update MLflow run %s: %s", run_id, one_line(exc))

    def children(self, status: RunStatus) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id], max_results=1000,
            filter_string=f"tags.mlflow.parentRunId = '{self.parent_id}' and attributes.status = '{status}'")


def parent_run(client: Any, experiment_id: str, study: optuna.Study, created: bool, tags: Mapping[str, str],
               wait_for_creator: Callable[[], Optional[str]]) -> str:
    """The study's parent run: the recorded one (RUNNING again), or a new one recorded in the study."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id is None and not created:
        run_id = wait_for_creator()
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":  # a refusal or hiccup, not a missing run: never fork
                raise SweeperError(f"cannot read the parent run {run_id} of study {study.study_name!r} "
                                   f"({redact(one_line(exc))}); rerun once the tracking store answers") from None
            run = None  # recorded in another tracking store: start a new parent here
        if run is None or run.info.experiment_id != experiment_id or run.info.lifecycle_stage == "deleted":
            run_id = None
    if run_id is None:
        run_id = client.create_run(experiment_id, run_name=study.study_name, tags=dict(tags)).info.run_id
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id
    client.update_run(run_id, status=RunStatus.RUNNING)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    return run_id


def wait_for_parent(storage: optuna.storages.BaseStorage, study_id: int, seconds: float = 30) -> Optional[str]:
    """Another worker created the study a moment ago and is creating the parent run: use its run."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run_id = storage.get_study_user_attrs(study_id).get(PARENT_ATTR)
        if run_id:
            return run_id
        time.sleep(0.5)
    return None  # the creator died before making it: make it here


def restore_run(runs: Runs, run: Any, params: Mapping[str, Any], metrics: Mapping[str, float]) -> None:
    """Rebuild a trial's MLflow record from the study (its objective, the values it returned, its params)."""
    for key, value in metrics.items():
        if key not in run.data.metrics:
            runs.client.log_metric(run.info.run_id, key, value)
    for key, value in params.items():
        name = key.rsplit(".", 1)[-1]
        if name not in run.data.params:
            runs.client.log_param(run.info.run_id, name, value)
    runs.end(run.info.run_id, RunStatus.FINISHED, {
        "optuna.trial_state": "COMPLETE",
        "repaired": "restored from the Optuna study after the tracking server was unreachable; plots and some "
                    "params may be missing"})
