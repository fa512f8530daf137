"""Opening the storage and the study, and naming a study after what defines its objective.

Invariants:
- a relative SQLite path is made absolute before any job sees it (jobs may run in other folders);
- several workers creating one storage or one study at once all end up using the same one (a fresh SQLite file is
  created whole, see _stores);
- a study's name derived by the sweeper changes whenever the objective could (pinned config, search space).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.distributions import BaseDistribution

from ._errors import SweeperError, one_line
from ._redact import redact
from ._stores import StoreError, check_database, check_driver, check_sqlite, create_whole, is_integrity_race

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


def _create_optuna_schema(tmp_url: str) -> None:
    optuna.storages.RDBStorage(tmp_url).engine.dispose()


def open_storage(url: str, heartbeat_interval: int, grace_period: int) -> optuna.storages.RDBStorage:
    """The Optuna storage: checked to be Optuna's (a SQLite file: created whole if missing), opened with the
    heartbeat settings."""
    key = "hydra.sweeper.storage"
    try:
        if url.startswith("sqlite"):
            check_sqlite(url, key, "optuna")
            create_whole(url, key, _create_optuna_schema)
        else:
            check_driver(url, key)
            check_database(url, key)
    except StoreError as exc:
        raise SweeperError(str(exc)) from None
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    last: Optional[Exception] = None
    for attempt in range(5):  # several workers creating a server database's schema at once: one wins
        try:
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


IDENTITY_ATTR = "sweeper.identity"  # study user attribute: what its trials' scores depend on


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:8]


def identity(task_config: Mapping[str, Any], distributions: Mapping[str, BaseDistribution], ignore: Sequence[str],
             extras: Optional[Mapping[str, Any]] = None) -> dict[str, str]:
    """What a study's scores depend on: the pinned config and the search space (without what does not change the
    objective, and without the values trials choose), and what the app's preflight adds (e.g. the data's sha256).
    Pure."""
    task = json.loads(json.dumps(task_config, default=str))
    for key in [*ignore, *distributions]:
        _pop_path(task, key)
    space = {k: repr(v) for k, v in sorted(distributions.items())}
    return {"config": _digest({"config": task, "space": space}), **{str(k): str(v) for k, v in (extras or {}).items()}}


def derived_name(prefix: str, ident: Mapping[str, str]) -> str:
    """Same identity -> same name (a rerun resumes); any change -> a new study. Pure."""
    return f"{prefix}-{_digest(dict(ident))}"


def check_identity(study: optuna.Study, ident: Mapping[str, str]) -> None:
    """A study keeps the identity it was created with: other data or another configuration is refused."""
    recorded = study.user_attrs.get(IDENTITY_ATTR)
    if recorded is None:
        study.set_user_attr(IDENTITY_ATTR, dict(ident))
        return
    differs = [k for k in sorted({*recorded, *ident}) if recorded.get(k) != ident.get(k)]
    if differs:
        what = ", ".join("another configuration or search space" if k == "config" else
                         f"another {k} ({str(ident.get(k))[:12]}..., the study's: {str(recorded.get(k))[:12]}...)"
                         for k in differs)
        raise SweeperError(f"study {study.study_name!r} was created for other trials than this run's: {what}; "
                           f"choose another hydra.sweeper.study_name (or leave it unset: the derived name follows "
                           f"the configuration and the data)")


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
