"""Opening the storage and the study, and naming a study after what defines its objective.

Invariants:
- a relative SQLite path is made absolute before any job sees it (jobs may run in other folders);
- several workers creating one storage or one study at once all end up using the same one;
- a study's name derived by the sweeper changes whenever the objective could (pinned config, search space).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.distributions import BaseDistribution

from ._errors import SweeperError, one_line
from .job import is_integrity_race, redact

DEFAULT_FOLDER = "multirun_outputs"


def storage_url(configured: Optional[str]) -> str:
    """The storage URL jobs are given: the default SQLite file, or the configured URL with an absolute path."""
    if not configured:
        folder = Path(DEFAULT_FOLDER).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'optuna.db'}"
    if configured.startswith("sqlite:///") and not configured.startswith("sqlite:////"):
        return f"sqlite:///{Path(configured[len('sqlite:///'):]).resolve()}"
    return configured


@contextlib.contextmanager
def _first_open_lock(url: str) -> Iterator[None]:
    """Two processes creating one SQLite file's schema at once collide: let them take turns (a lock file beside it)."""
    if not url.startswith("sqlite:///"):
        yield
        return
    db = Path(url[len("sqlite:///"):])
    lock_path = db.parent / f".{db.name}.lock"
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_storage(url: str, heartbeat_interval: int, grace_period: int) -> optuna.storages.RDBStorage:
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise SweeperError(f"hydra.sweeper.storage={url}: folder {folder} does not exist")
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    last: Optional[Exception] = None
    for attempt in range(5):  # several workers creating a server database's schema at once: one wins
        try:
            with _first_open_lock(url):
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs,
                                                  heartbeat_interval=heartbeat_interval, grace_period=grace_period)
        except Exception as exc:
            last = exc
            if not is_integrity_race(exc):
                break
            time.sleep(0.2 * (attempt + 1))
    raise SweeperError(f"hydra.sweeper.storage={redact(url)}: cannot open the Optuna storage "
                       f"({one_line(last) if last else 'unknown error'})")


def _pop_path(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part) if isinstance(tree, dict) else None
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def derived_name(prefix: str, task_config: Mapping[str, Any], distributions: Mapping[str, BaseDistribution],
                 ignore: Sequence[str]) -> str:
    """Same objective and space -> same name (a rerun resumes); any change -> a new study. Pure."""
    task = json.loads(json.dumps(task_config, default=str))
    for key in [*ignore, *distributions]:  # what does not change the objective, and the values trials choose
        _pop_path(task, key)
    identity = {"config": task, "space": {k: repr(v) for k, v in sorted(distributions.items())}}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{prefix}-{digest}"


def open_study(name: str, storage: optuna.storages.BaseStorage, direction: str,
               metric_name: str) -> tuple[optuna.Study, bool]:
    """The study, created if needed (True) or loaded; its objective named for Optuna's plots and dashboards."""
    try:
        study = optuna.create_study(study_name=name, storage=storage, direction=direction)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        created = False
    if study.direction.name.lower() != direction:
        raise SweeperError(f"study {name!r} {study.direction.name.lower()}s its objective, this sweep would "
                           f"{direction} {metric_name}: choose another hydra.sweeper.study_name")
    if study.metric_names is None:
        study.set_metric_names([metric_name])
    elif study.metric_names != [metric_name]:
        raise SweeperError(f"study {name!r} records the objective {study.metric_names[0]!r}, this sweep's is "
                           f"{metric_name!r}: choose another hydra.sweeper.study_name")
    return study, created


def trial_id(storage: optuna.storages.BaseStorage, study_id: int, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(study_id, number)
