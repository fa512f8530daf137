"""MLflow: where runs go, and what one training run records."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

import mlflow
from mlflow.exceptions import MlflowException

from hydra_plugins.optuna_mlflow_sweeper.job import (
    StoreError,
    check_tracking_uri,
    how_to_open,
    is_integrity_race,
    is_unreachable,
    limit_http_retries,
    open_experiment,
    redact,
    source_tags,
)
from src.config import Config
from src.data.schema import Dataset
from src.errors import UserError
from src.model.forest import hyperparameters

REPO_ROOT = Path(__file__).resolve().parent.parent


class TrackingError(UserError):
    pass


def loggable_config(cfg: Any) -> dict:
    """The resolved config as an artifact, without the storage password the sweeper passes to each job."""
    from omegaconf import OmegaConf

    tree = OmegaConf.to_container(cfg, resolve=True)
    if isinstance(tree.get("sweep"), dict) and tree["sweep"].get("storage"):
        tree["sweep"]["storage"] = redact(tree["sweep"]["storage"])
    if isinstance(tree.get("mlflow"), dict) and tree["mlflow"].get("tracking_uri"):
        tree["mlflow"]["tracking_uri"] = redact(tree["mlflow"]["tracking_uri"])
    return tree


_CONNECTED: dict[tuple[str, str], str] = {}


def connect(tracking_uri: str, experiment_name: str) -> str:
    """Point MLflow at the store and return the experiment id, creating the experiment if needed.

    Once per process and store: a sweep's trials share the sweeper's process (or a few joblib workers).
    """
    key = (tracking_uri, experiment_name)
    if key not in _CONNECTED:
        _CONNECTED[key] = _connect(tracking_uri, experiment_name)
    mlflow.set_tracking_uri(tracking_uri)
    return _CONNECTED[key]


def _connect(tracking_uri: str, experiment_name: str) -> str:
    try:
        check_tracking_uri(tracking_uri)
    except StoreError as exc:
        raise TrackingError(str(exc)) from None
    limit_http_retries()
    if urlparse(tracking_uri).password is not None:  # MLflow's "View run at <url>" lines would show the password
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    mlflow.set_tracking_uri(tracking_uri)
    try:
        return open_experiment(tracking_uri, experiment_name)
    except StoreError as exc:
        raise TrackingError(str(exc)) from None


@lru_cache(maxsize=1)
def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


_DATASETS: dict[str, Any] = {}


def _mlflow_dataset(data: Dataset) -> Any:
    """Built once per process and data file: the digest and profile cost a pass over the rows."""
    if data.sha256 not in _DATASETS:
        source = data.source if Path(data.source).exists() else None
        _DATASETS.clear()
        with warnings.catch_warnings():  # hints about integer columns and ambiguous local sources: both intended
            warnings.simplefilter("ignore", category=UserWarning)
            frame = data.frame()
            dataset = mlflow.data.from_pandas(frame, source=source, name=data.name, targets="Class")
            # MLflow infers the schema cell by cell in Python: ~20 s for the real data's 8.8 million cells, in the
            # first trial of every sweep. The loader has checked every value is finite, so the first rows give the
            # same schema (MLflow's own inference, on fewer rows); `schema` is a cached property, filled here.
            dataset.__dict__["schema"] = mlflow.models.infer_signature(frame.head(1000)).inputs
            _DATASETS[data.sha256] = dataset
    return _DATASETS[data.sha256]


def run_params(cfg: Config, data: Dataset) -> dict[str, Any]:
    params = hyperparameters(cfg.model)
    params.update(
        test_size=cfg.split.test_size,
        cv_folds=cfg.evaluation.cv_folds,
        split_seed=cfg.split.seed,
        random_state=cfg.model.random_state,
        dataset=data.name,
        n_rows=len(data.y),
        n_frauds=data.n_frauds,
        n_duplicates_dropped=data.n_duplicates_dropped,
        cost_model=cfg.decision.name,
        time_feature=cfg.features.time,
    )
    if data.name == "synthetic":
        params.update(dataset_n_rows=cfg.dataset.n_rows, dataset_fraud_rate=cfg.dataset.fraud_rate,
                      dataset_seed=cfg.dataset.seed)
    return params


HOLDER_TAG = "run.holder"  # a single run's process: the next run on the store ends it if that process is gone


def run_tags(cfg: Config, data: Dataset, purpose: str) -> dict[str, str]:
    tags = {**source_tags(), **cfg.mlflow.tags, "run_purpose": purpose, "data_sha256": data.sha256,
            "git_commit": git_commit()}
    if not cfg.sweep.in_sweep:
        tags[HOLDER_TAG] = json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
    if cfg.sweep.study_name:
        tags["optuna.study_name"] = cfg.sweep.study_name
    if cfg.sweep.trial_number is not None:
        tags["optuna.trial_number"] = str(cfg.sweep.trial_number)
    return tags


def end_abandoned_single_runs(experiment_id: str) -> int:
    """Single runs still RUNNING whose process is gone from this host (a full disk or a kill ended it before it
    could end its run): ended KILLED, with the reason; the sweeper repairs its own runs the same way. Returns how
    many."""
    client = mlflow.MlflowClient()
    ended = 0
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        try:
            holder = json.loads(run.data.tags.get(HOLDER_TAG, "{}"))
        except ValueError:
            continue
        if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
            continue  # a sweep's run (the sweeper's to repair), or another host's: never guessed
        try:
            os.kill(holder["pid"], 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        client.set_tag(run.info.run_id, "error", "its process ended before the run did (killed, or a full disk): "
                                                 "ended by the next run on this store")
        client.set_terminated(run.info.run_id, "KILLED")
        ended += 1
    return ended


class TrackingUnavailable(TrackingError):
    pass


class RunLogger:
    """A job's MLflow calls, surviving the tracking server going away mid-job.

    After the first call that cannot reach the server the rest are skipped and ``lost`` says why; the job still
    finishes its work, and the sweeper repairs the run from the Optuna study once the server is back.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.lost: Optional[str] = None

    def __call__(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self.lost is not None:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_unreachable(exc):
                raise
            self.lost = f"the tracking server at {redact(self.tracking_uri)} stopped answering"
            print(f"warning: {self.lost}; this job's records are kept and repaired when it is back", file=sys.stderr)
            return None


@contextlib.contextmanager
def tracked_run(cfg: Config, experiment_id: str, run_name: str, log: RunLogger) -> Iterator[Any]:
    """The run for this job: the one the sweeper prepared, or a new one (nested if a parent is given).

    Ends FINISHED, KILLED when pruned or interrupted, FAILED with the error as a tag otherwise.
    """
    from optuna.exceptions import TrialPruned

    if cfg.sweep.run_id:
        run = log(mlflow.start_run, run_id=cfg.sweep.run_id)
    else:
        run = log(mlflow.start_run, experiment_id=experiment_id, run_name=run_name,
                  parent_run_id=cfg.sweep.parent_run_id or None)
    try:
        yield run
    except TrialPruned as exc:
        log(mlflow.set_tags, {"optuna.trial_state": "PRUNED", "pruned": str(exc) or "true"})
        log(mlflow.end_run, "KILLED")
        raise
    except KeyboardInterrupt:
        log(mlflow.set_tag, "error", "interrupted (KeyboardInterrupt)")
        log(mlflow.end_run, "KILLED")
        raise
    except BaseException as exc:
        with contextlib.suppress(Exception):
            log(mlflow.set_tag, "error", f"{type(exc).__name__}: {exc}"[:5000])
        log(mlflow.end_run, "FAILED")
        raise
    else:
        log(mlflow.end_run, "FINISHED")
    finally:
        if mlflow.active_run() is not None and log.lost is not None:
            with contextlib.suppress(Exception):  # leave no half-open run in this process
                mlflow.end_run()


def batch(*, params: Optional[dict[str, Any]] = None, tags: Optional[dict[str, str]] = None,
          metrics: Sequence[tuple[str, float, int]] = ()) -> None:
    """Params, tags and (name, value, step) metrics of the active run in one MLflow call (one store transaction);
    metric values rounded as shown_metrics does. (Synchronous: MLflow 3.17's asynchronous logging shuts its queue
    down at every end_run, joining a thread that polls once a second: ~0.7 s per run, more than it saves.)"""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.time import get_current_time_millis

    run = mlflow.active_run()
    assert run is not None, "batch() logs to the active run"
    now = get_current_time_millis()
    shown = [(name, shown_metrics({name: value})[name], step) for name, value, step in metrics]
    mlflow.MlflowClient().log_batch(
        run.info.run_id, metrics=[Metric(name, value, now, step) for name, value, step in shown],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])


def shown_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """Metrics as MLflow's UI shows them: scores to 4 decimals (what every printed AP has; the study keeps full
    precision), seconds to the millisecond, instead of 16 digits in every column."""
    return {k: round(float(v), 3 if k.endswith("seconds") else 4) for k, v in metrics.items()}


def log_dataset(data: Dataset, context: str) -> None:
    dataset = _mlflow_dataset(data)
    with warnings.catch_warnings():  # MLflow hints that Class is an integer column: it is, on purpose
        warnings.simplefilter("ignore", category=UserWarning)
        try:
            mlflow.log_input(dataset, context=context)
        except MlflowException as exc:  # workers on one server logging the same dataset at the same moment
            if not is_integrity_race(exc):
                raise
            mlflow.log_input(dataset, context=context)


def log_figures(figures: dict[str, Any], folder: str = "plots") -> None:
    import matplotlib.pyplot as plt

    try:
        for name, fig in figures.items():
            mlflow.log_figure(fig, f"{folder}/{name}")
    finally:  # also when one fails (a full disk, a server gone): a sweep's process draws hundreds of figures
        for fig in figures.values():
            plt.close(fig)


def print_run_location(run: mlflow.ActiveRun, tracking_uri: str) -> None:
    """Where to look at a run: a result (stdout)."""
    print("the run in the MLflow UI:\n" + "\n".join(f"  {line}" for line in how_to_open(
        tracking_uri, run.info.experiment_id, run.info.run_id)))
