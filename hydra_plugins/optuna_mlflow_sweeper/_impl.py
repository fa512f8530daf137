"""The sweep loop: ask Optuna, launch through Hydra's launcher, tell Optuna, keep MLflow in step.

Invariants it keeps (also across crashes, resumes and several workers on one study):
- the study ends with exactly ``n_trials`` finished (COMPLETE or PRUNED) trials;
- every trial is a nested MLflow run under the study's one parent run, linked both ways;
- no trial stays RUNNING in Optuna, and no run stays RUNNING in MLflow, once its worker is gone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from src.tracking import (  # noqa: E402  (the project's own helpers)
    check_tracking_uri,
    how_to_open,
    is_integrity_race,
    is_unreachable,
    redact,
)

from . import _search_space
from ._factories import FactoryError, make_pruner, make_sampler
from ._trial import PRUNER_ATTR, TWIN_ATTR

log = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"  # the trial -> MLflow link (user attribute)
FAIL_REASON_ATTR = "fail_reason"
WORKER_ATTR = "sweeper.worker"  # trial system attribute: which process runs it
PACKAGED_ATTR = "packaged"
COUNTED_FAILURES = ("error", "nan")  # what spends the failure budget (not stale, interrupted or surplus trials)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class SweeperError(HydraException):
    """An expected problem with the sweep's settings or stores: reported as one line."""


class TrackingDown(SweeperError):
    """The MLflow tracking server stopped answering: the sweep stops, the Optuna study keeps every result."""


class _GuardedClient:
    """An MlflowClient whose calls raise TrackingDown when the server is unreachable (not after 4 minutes of
    tracebacks), so that the sweep can stop cleanly and be repaired later."""

    def __init__(self, client: Any, uri: str) -> None:
        self._client, self._uri = client, uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                if is_unreachable(exc):
                    raise TrackingDown(f"the tracking server at {redact(self._uri)} stopped answering") from None
                raise

        return call


@dataclass
class _Launched:
    trial: Any  # optuna.Trial, or the FrozenTrial being packaged
    trial_id: int
    run_id: str
    params: dict[str, Any]


class _Heartbeat:
    """Records a heartbeat for the trials in flight, so that other workers can tell when this one died."""

    def __init__(self, storage: optuna.storages.BaseStorage, interval: float) -> None:
        self.storage, self.interval = storage, interval
        self.trial_ids: set[int] = set()
        self.lock: Optional[optuna.Study] = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
        self._thread.start()

    def add(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.add(trial_id)
        self.storage.record_heartbeat(trial_id)

    def discard(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            try:
                for trial_id in ids:
                    self.storage.record_heartbeat(trial_id)
                if self.lock is not None:  # a packaging claim in progress
                    self.lock.set_user_attr("heartbeat", time.time())
            except Exception as exc:  # a storage hiccup must not kill the thread
                log.warning("heartbeat failed: %s", exc)

    def stop(self) -> None:
        self._stop.set()


class OptunaMlflowSweeperImpl(Sweeper):
    def __init__(
        self,
        study_name: Optional[str],
        storage: Optional[str],
        n_trials: int,
        timeout: Optional[float],
        sampler: str,
        sampler_options: dict,
        seed: int,
        pruner: str,
        pruner_options: dict,
        start_from_config: bool,
        max_failures: int,
        n_jobs: Optional[int],
        params: Optional[dict],
        tracking_uri: str,
        experiment_name: str,
        package: Any,
        heartbeat_interval: int,
        grace_period: int,
    ) -> None:
        self.study_name = study_name
        self.storage_url = storage
        self.n_trials = n_trials
        self.timeout = timeout
        self.sampler_name, self.sampler_options, self.seed = sampler, dict(sampler_options or {}), seed
        self.pruner_name, self.pruner_options = pruner, dict(pruner_options or {})
        self.start_from_config = start_from_config
        self.max_failures = max_failures
        self.n_jobs = n_jobs
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.package = package
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.worker = {"host": socket.gethostname(), "pid": os.getpid(), "invocation": uuid.uuid4().hex}
        self.config: Optional[DictConfig] = None
        self.tracking_down = False

    # -- Hydra's Sweeper interface ---------------------------------------------------------------------------

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def sweep(self, arguments: list[str]) -> Any:
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # The heartbeat is recorded by this sweeper itself (ask/tell has none of its own).
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._check_settings()
        space = self._search_space(arguments)
        base_cfg = self._validate_space(space)
        check_tracking_uri(self.tracking_uri)  # an unreachable server fails here, before anything is written
        storage = self._storage()
        study_name = self.study_name or self._derived_study_name(base_cfg, space)
        study, created = self._study(study_name, storage)
        point: dict = {}
        if self.start_from_config:
            configured = {key: OmegaConf.select(base_cfg, key) for key in space.distributions}
            point = _search_space.start_point(space.distributions, configured)
            if point and created:
                study.enqueue_trial(point, skip_if_exists=True)
        study.set_user_attr(PRUNER_ATTR, {"name": self.pruner_name, "options": self.pruner_options})
        self.sweep_started = time.monotonic()

        from mlflow.tracking import MlflowClient

        from src.tracking import connect

        experiment_id = connect(self.tracking_uri, self.experiment_name)
        client = _GuardedClient(MlflowClient(self.tracking_uri), self.tracking_uri)
        parent_id = self._parent_run(study, storage, client, experiment_id, created, space)
        ctx = _Context(study, client, experiment_id, parent_id, space, storage,
                       storage.get_study_id_from_name(study.study_name))
        self._repair(ctx)
        if point and not created and _search_space.start_point_lost(study.get_trials(deepcopy=False), point):
            study.enqueue_trial(point)  # (skip_if_exists would count the failed copy)
        heartbeat = self.heartbeat = _Heartbeat(storage, self.heartbeat_interval)
        finished_ok, abandon_reason, status = False, "error", "FAILED"
        try:
            self._print_start(study, ctx)
            stop_reason = self._loop(ctx, heartbeat)
            self._finish_parent_metrics(ctx)
            results = self._write_results(ctx, stop_reason)
            if stop_reason == "complete" and self._package_enabled():
                self._package(ctx, results)
            finished_ok, status = True, "FINISHED"
            return results
        except TrackingDown as exc:
            self.tracking_down = True  # no more MLflow calls: each would wait for the server again
            abandon_reason = "infrastructure: tracking server unreachable"
            self._abandon_own_trials(ctx, abandon_reason)
            self._write_results(ctx, "tracking server unreachable")
            done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))
            raise TrackingDown(
                f"{exc} during the sweep: study {study.study_name!r} keeps its {done} finished trials; rerun the "
                f"same command once the server is back: the MLflow runs are repaired from the study and the sweep "
                f"continues") from None
        except (KeyboardInterrupt, SystemExit):
            abandon_reason, status = "interrupted", "KILLED"
            raise
        finally:
            heartbeat.stop()
            if not finished_ok:
                self._abandon_own_trials(ctx, abandon_reason)
            try:
                if not self.tracking_down:
                    client.set_terminated(parent_id, status=status)
            except Exception as exc:  # the tracking store may be the thing that failed
                log.warning("could not mark the parent run %s %s: %s", parent_id, status, exc)

    # -- settings, search space, stores ----------------------------------------------------------------------

    def _check_settings(self) -> None:
        if self.n_trials < 1:
            raise SweeperError(f"hydra.sweeper.n_trials must be >= 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise SweeperError(f"hydra.sweeper.timeout must be > 0 seconds (or null), got {self.timeout}")
        if self.max_failures < 1:
            raise SweeperError(f"hydra.sweeper.max_failures must be >= 1, got {self.max_failures}")
        if self.heartbeat_interval < 1 or self.grace_period <= self.heartbeat_interval:
            raise SweeperError("hydra.sweeper.grace_period must exceed hydra.sweeper.heartbeat_interval (>= 1 s)")
        try:
            make_sampler(self.sampler_name, self.sampler_options, self.seed)
            make_pruner(self.pruner_name, self.pruner_options)
        except FactoryError as exc:
            raise SweeperError(str(exc)) from None

    def _search_space(self, arguments: list[str]) -> _search_space.SearchSpace:
        try:
            space = _search_space.build(self.params, arguments)
        except _search_space.SearchSpaceError as exc:
            raise SweeperError(f"search space: {exc}") from None
        if not space.distributions:
            raise SweeperError("the search space is empty: choose search_space=random_forest or give sweep "
                               "expressions such as model.max_depth=range(4,31)")
        return space

    def _validate_space(self, space: _search_space.SearchSpace) -> DictConfig:
        """Compose the pinned config and check the search space's extreme values against the schema."""
        assert self.config is not None
        try:
            base = self.hydra_context.config_loader.load_sweep_config(self.config, list(space.pinned_overrides))
        except HydraException as exc:
            cause = f" - {exc.__cause__}" if exc.__cause__ else ""
            raise SweeperError(" ".join(f"{exc}{cause}".split())) from None
        _check_task_config(base, "the pinned values")
        for key, dist in space.distributions.items():
            if OmegaConf.select(base, key, default=_ABSENT) is _ABSENT:
                raise SweeperError(f"search space: {key} is not a key of the config (check the spelling)")
            if OmegaConf.is_config(OmegaConf.select(base, key)):
                raise SweeperError(f"search space: {key} is a config group or section, not a single value")
            for value in _extremes(dist):
                probe = base.copy()
                try:
                    with read_write(probe):
                        OmegaConf.update(probe, key, value, merge=False)
                except Exception as exc:
                    raise SweeperError(f"search space: {key}={value!r} does not fit the config: "
                                       f"{_one_line(exc)}") from None
                _check_task_config(probe, f"search space value {key}={value!r}")
        return base

    def _storage(self) -> optuna.storages.RDBStorage:
        url = self.storage_url
        if not url:
            folder = Path("multirun_outputs").resolve()
            folder.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{folder / 'optuna.db'}"
        elif url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            url = f"sqlite:///{Path(url[len('sqlite:///'):]).resolve()}"  # jobs may run elsewhere
        if url.startswith("sqlite:///"):
            folder = Path(url[len("sqlite:///"):]).parent
            if not folder.is_dir():
                raise SweeperError(f"hydra.sweeper.storage={url}: folder {folder} does not exist")
        self.storage_url = url
        engine_kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {"connect_args": {"timeout": 60}}
        last: Exception | None = None
        for attempt in range(5):  # several workers creating the schema at once: one wins, the others retry
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine_kwargs, heartbeat_interval=self.heartbeat_interval,
                    grace_period=self.grace_period,
                )
            except Exception as exc:
                last = exc
                if not is_integrity_race(exc):
                    break
                time.sleep(0.2 * (attempt + 1))
        raise SweeperError(f"hydra.sweeper.storage={redact(url)}: cannot open the Optuna storage "
                           f"({' '.join(str(last).splitlines()[0].split()) if last else 'unknown error'})")

    def _derived_study_name(self, base: DictConfig, space: _search_space.SearchSpace) -> str:
        """Same objective and space -> same name (a rerun resumes); any change -> a new study."""
        task = OmegaConf.to_container(_task_part(base), resolve=True)
        assert isinstance(task, dict)
        for volatile in ("mlflow", "registry", "sweep"):
            task.pop(volatile, None)
        for key in list(space.distributions) + ["model.n_jobs"]:  # the swept values and the machine's cores
            _pop_path(task, key)
        identity = {"config": task, "space": {k: repr(v) for k, v in sorted(space.distributions.items())}}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:8]
        dataset = (task.get("dataset") or {}).get("name", "data")
        return f"{dataset}-rf-{digest}"

    def _study(self, name: str, storage: optuna.storages.RDBStorage) -> tuple[optuna.Study, bool]:
        try:
            return optuna.create_study(study_name=name, storage=storage, direction="maximize"), True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=name, storage=storage)
        if study.direction != optuna.study.StudyDirection.MAXIMIZE:
            raise SweeperError(f"study {name!r} minimises its objective; this sweeper maximises average "
                               f"precision: choose another hydra.sweeper.study_name")
        return study, False

    # -- recovery ----------------------------------------------------------------------------------------------

    def _repair(self, ctx: _Context) -> None:
        """Fail trials whose worker is gone, and end the MLflow runs of trials that are no longer running."""
        study = ctx.study
        optuna.storages.fail_stale_trials(study)  # heartbeat older than the grace period
        now = time.time()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            worker = trial.system_attrs.get(WORKER_ATTR)
            if worker is None:
                started = trial.datetime_start.timestamp() if trial.datetime_start else now
                gone = now - started > 3 * self.grace_period  # died before its first heartbeat
            else:
                gone = self._worker_gone(worker)
            if gone:
                if self._recover_finished(ctx, trial):
                    continue
                try:
                    ctx.storage.set_trial_user_attr(self._trial_id(ctx, trial.number), FAIL_REASON_ATTR,
                                                    "stale: its worker died")
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # it finished (or another worker failed it) meanwhile
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        # (Trials failed by Optuna's heartbeat check carry no fail_reason: they count as stale, not as errors.)
        # Runs still RUNNING whose trial is not (killed workers, or a crash between two bookkeeping steps).
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        states = {n: t.state for n, t in by_number.items()}
        running_runs = ctx.client.search_runs(
            [ctx.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{ctx.parent_id}' and attributes.status = 'RUNNING'",
            max_results=1000,
        )
        for run in running_runs:
            number = run.data.tags.get("optuna.trial_number")
            state = states.get(int(number)) if number and number.isdigit() else None
            if state == TrialState.RUNNING:
                continue  # a live trial of another worker
            if run.info.run_name == "best_model_packaged" and state == TrialState.COMPLETE:
                _end_run(ctx.client, run.info.run_id, "KILLED", {"error": "packaging was interrupted"})
                continue
            if state == TrialState.COMPLETE:  # finished in Optuna while MLflow was unreachable: complete the run
                self._restore_run(ctx, run, by_number[int(number)])
                continue
            _end_run(ctx.client, run.info.run_id, "KILLED", {
                "optuna.trial_state": state.name if state is not None else "UNKNOWN",
                "error": "the worker died (killed or crashed) before the trial ended"})

    def _recover_finished(self, ctx: _Context, trial: FrozenTrial) -> bool:
        """A worker killed after its trial's job finished but before telling Optuna: keep the result."""
        run_id = trial.user_attrs.get(RUN_ATTR)
        if not run_id:
            return False
        run = ctx.client.get_run(run_id)
        value = run.data.metrics.get("val_pr_auc")
        if run.info.status != "FINISHED" or value is None:
            return False
        try:
            ctx.study.tell(trial.number, value)
        except (ValueError, RuntimeError):  # finished meanwhile
            return False
        _end_run(ctx.client, run_id, "FINISHED", {"optuna.trial_state": "COMPLETE",
                                                  "repaired": "told to Optuna after its worker died"})
        print(f"trial {trial.number}: its worker died after the job finished; result {value:.4f} kept",
              file=sys.stderr)
        return True

    def _restore_run(self, ctx: _Context, run: Any, trial: FrozenTrial) -> None:
        """Rebuild a trial's MLflow record from the study (the objective and the metrics the trial kept there)."""
        metrics = {"val_pr_auc": trial.value}
        metrics.update({k: trial.user_attrs[k] for k in ("val_pr_auc_std", "val_roc_auc", "fit_seconds")
                        if isinstance(trial.user_attrs.get(k), (int, float))})
        for key, value in metrics.items():
            if key not in run.data.metrics:
                ctx.client.log_metric(run.info.run_id, key, value)
        for key, value in trial.params.items():
            name = key.rsplit(".", 1)[-1]
            if name not in run.data.params:
                ctx.client.log_param(run.info.run_id, name, value)
        _end_run(ctx.client, run.info.run_id, "FINISHED", {
            "optuna.trial_state": "COMPLETE",
            "repaired": "restored from the Optuna study after the tracking server was unreachable; "
                        "plots and some params may be missing"})
        print(f"trial {trial.number}: MLflow run {run.info.run_id} restored from the study", file=sys.stderr)

    def _abandon_own_trials(self, ctx: _Context, reason: str) -> None:
        """On the way out after an error or Ctrl-C: no trial of this invocation stays RUNNING."""
        try:
            for trial in ctx.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if trial.system_attrs.get(WORKER_ATTR, {}).get("invocation") != self.worker["invocation"]:
                    continue
                trial_id = self._trial_id(ctx, trial.number)
                ctx.storage.set_trial_user_attr(trial_id, FAIL_REASON_ATTR, reason)
                ctx.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                if trial.user_attrs.get(RUN_ATTR) and not self.tracking_down:
                    _end_run(ctx.client, trial.user_attrs[RUN_ATTR], "KILLED",
                             {"optuna.trial_state": "FAIL", "error": f"sweep {reason}"})
        except Exception as exc:  # best effort (the tracking server may be down): the next start repairs the rest
            log.warning("could not close this sweep's running trials: %s", exc)

    def _worker_gone(self, worker: dict) -> bool:
        if worker.get("invocation") == self.worker["invocation"]:
            return False
        if worker.get("host") != self.worker["host"]:
            return False  # another machine: only its heartbeat can tell
        pid = worker.get("pid")
        if not isinstance(pid, int) or pid == os.getpid():
            return True  # our own pid but an older invocation (same process, earlier sweep)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _trial_id(self, ctx: _Context, number: int) -> int:
        return ctx.storage.get_trial_id_from_study_id_trial_number(ctx.study_id, number)

    def _parent_run(self, study: optuna.Study, storage: optuna.storages.BaseStorage, client: Any,
                    experiment_id: str, created: bool, space: _search_space.SearchSpace) -> str:
        from mlflow.exceptions import MlflowException

        from src.tracking import TAGS

        tags = {
            **TAGS,
            "run_purpose": "hyperparameter_sweep",
            "optuna.study_name": study.study_name,
            "optuna.storage": redact(self.storage_url or ""),
            "optuna.sampler": f"{self.sampler_name} {json.dumps(self.sampler_options)} seed={self.seed}",
            "optuna.pruner": f"{self.pruner_name} {json.dumps(self.pruner_options)}",
            "optuna.n_trials": str(self.n_trials),
            "search_space": json.dumps(space.expressions),
            "pinned": json.dumps(_shown(space.pinned), default=str),
        }
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id is None and not created:
            run_id = self._wait_for_parent(study.study_name, storage)
        if run_id is not None:
            try:
                run = client.get_run(run_id)
                if run.info.experiment_id != experiment_id or run.info.lifecycle_stage == "deleted":
                    run_id = None
            except MlflowException:
                run_id = None  # recorded in another tracking store: start a new parent here
        if run_id is None:
            run = client.create_run(experiment_id, run_name=study.study_name, tags=tags)
            run_id = run.info.run_id
            study.set_user_attr(PARENT_ATTR, run_id)
        else:
            client.update_run(run_id, status="RUNNING")
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
        return run_id

    def _wait_for_parent(self, name: str, storage: optuna.storages.BaseStorage) -> Optional[str]:
        """Another worker created the study a moment ago and is creating the parent run: use its run."""
        deadline = time.monotonic() + 30
        study_id = storage.get_study_id_from_name(name)
        while time.monotonic() < deadline:
            run_id = storage.get_study_user_attrs(study_id).get(PARENT_ATTR)
            if run_id:
                return run_id
            time.sleep(0.5)
        return None  # the creator died before making it: make it here

    # -- the loop ----------------------------------------------------------------------------------------------

    def _batch_size(self) -> int:
        if self.n_jobs:
            return max(1, int(self.n_jobs))
        launcher_jobs = OmegaConf.select(self.config, "hydra.launcher.n_jobs", default=None)
        if isinstance(launcher_jobs, int) and launcher_jobs != 0:
            return launcher_jobs if launcher_jobs > 0 else (os.cpu_count() or 1)
        return 1

    def _loop(self, ctx: _Context, heartbeat: _Heartbeat) -> str:
        batch_size = self._batch_size()
        launched = False  # as with Optuna's timeout, the first trial always runs
        while True:
            trials = ctx.study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            failures = [t for t in trials if t.state == TrialState.FAIL
                        and t.user_attrs.get(FAIL_REASON_ATTR) in COUNTED_FAILURES]
            if finished >= self.n_trials and running == 0:
                return "complete"
            if len(failures) >= self.max_failures:
                last = failures[-1].user_attrs.get("error", "see the trials' error tags")
                raise SweeperError(
                    f"failure budget spent: {len(failures)} trials of study {ctx.study.study_name!r} failed "
                    f"(last: {last}); fix the cause or raise hydra.sweeper.max_failures")
            if launched and self.timeout is not None and time.monotonic() - self.sweep_started >= self.timeout:
                print(f"timeout of {self.timeout:g} s reached: {finished}/{self.n_trials} trials finished; "
                      f"rerun the same command to continue", file=sys.stderr)
                return "timeout"
            room = self.n_trials - finished - running
            if room <= 0:  # the rest run in other workers: wait for them to end (or to go stale)
                self._sleep_and_repair(ctx)
                continue
            batch = [b for b in (self._ask(ctx, heartbeat) for _ in range(min(batch_size, room))) if b]
            if batch:
                self._run_batch(ctx, heartbeat, batch)
                launched = True

    def _sleep_and_repair(self, ctx: _Context) -> None:
        time.sleep(self.heartbeat_interval)
        self._repair(ctx)

    def _sampler_for_next_ask(self, study: optuna.Study, n_existing: int, others_running: bool) -> None:
        # Seeded per position in the study: a resumed study does not replay its first proposals (optuna#3255);
        # concurrent workers add their own entropy so they do not propose the same point.
        seed = self.seed + n_existing
        if others_running:
            seed += int(self.worker["invocation"][:8], 16)
        study.sampler = make_sampler(self.sampler_name, self.sampler_options, seed % (2**32))

    def _ask(self, ctx: _Context, heartbeat: _Heartbeat) -> Optional[_Launched]:
        trials = ctx.study.get_trials(deepcopy=False)
        others_running = any(t.state == TrialState.RUNNING for t in trials)
        self._sampler_for_next_ask(ctx.study, len(trials), others_running)
        trial = ctx.study.ask(dict(ctx.space.distributions))
        trial_id = self._trial_id(ctx, trial.number)
        heartbeat.add(trial_id)
        ctx.storage.set_trial_system_attr(trial_id, WORKER_ATTR, self.worker)
        # Exactly n_trials: if the trials before this one already fill the study, this one is surplus.
        earlier = [t for t in ctx.study.get_trials(deepcopy=False)
                   if t.number < trial.number and t.state != TrialState.FAIL]
        if len(earlier) >= self.n_trials:
            trial.set_user_attr(FAIL_REASON_ATTR, "surplus")
            ctx.study.tell(trial, state=TrialState.FAIL)
            heartbeat.discard(trial_id)
            return None
        from src.tracking import TAGS

        run = ctx.client.create_run(
            ctx.experiment_id,
            run_name=f"trial-{trial.number:03d}",
            tags={
                **TAGS,
                "mlflow.parentRunId": ctx.parent_id,
                "run_purpose": "hyperparameter_tuning",
                "optuna.study_name": ctx.study.study_name,
                "optuna.trial_number": str(trial.number),
            },
        )
        trial.set_user_attr(RUN_ATTR, run.info.run_id)
        return _Launched(trial, trial_id, run.info.run_id, dict(trial.params))

    def _job_overrides(self, ctx: _Context, item: _Launched, stage: str = "trial") -> list[str]:
        return [
            *ctx.space.pinned_overrides,
            *_search_space.to_overrides(item.params),
            f"sweep.study_name={_search_space.format_value(ctx.study.study_name)}",
            f"sweep.storage={_search_space.format_value(self.storage_url)}",
            f"sweep.trial_number={item.trial.number}",
            f"sweep.parent_run_id={ctx.parent_id}",
            f"sweep.run_id={item.run_id}",
            f"sweep.stage={stage}",
        ]

    def _run_batch(self, ctx: _Context, heartbeat: _Heartbeat, batch: list[_Launched]) -> None:
        overrides = [self._job_overrides(ctx, item) for item in batch]
        try:
            returns = self.launcher.launch(overrides, initial_job_idx=batch[0].trial.number)
        except BaseException as exc:
            for item in batch:
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
                self._tell_failed(ctx, item, reason, _describe(exc), "KILLED")
                heartbeat.discard(item.trial_id)
            raise
        down: Optional[TrackingDown] = None
        for item, ret in zip(batch, returns, strict=True):
            try:
                self._tell(ctx, item, ret)  # Optuna first, then MLflow
            except TrackingDown as exc:
                down = down or exc  # the other trials of the batch are still told to Optuna
            heartbeat.discard(item.trial_id)
        if down is not None:
            raise down

    def _tell(self, ctx: _Context, item: _Launched, ret: JobReturn) -> None:
        trial = item.trial
        if ret.status == JobStatus.COMPLETED:
            value = ret._return_value
            try:
                value = float(value)
            except (TypeError, ValueError):
                value = float("nan")
            if not math.isfinite(value):
                self._tell_failed(ctx, item, "nan", f"the objective is {ret._return_value!r}, not a number")
                return
            ctx.study.tell(trial, value)
            _end_run(ctx.client, item.run_id, "FINISHED", {"optuna.trial_state": "COMPLETE"})
            twin = ctx.storage.get_trial_user_attrs(item.trial_id).get(TWIN_ATTR)
            note = f"the same forests as trial {twin}: its result, not refitted" if twin is not None else ""
            self._progress(ctx, trial.number, "COMPLETE", value, note)
            return
        exc = ret._return_value
        if isinstance(exc, optuna.TrialPruned):
            ctx.study.tell(trial, state=TrialState.PRUNED)
            _end_run(ctx.client, item.run_id, "KILLED", {"optuna.trial_state": "PRUNED"})
            self._progress(ctx, trial.number, "PRUNED", None, str(exc))
            return
        self._tell_failed(ctx, item, "error", _describe(exc))

    def _tell_failed(self, ctx: _Context, item: _Launched, reason: str, error: str,
                     run_status: str = "FAILED") -> None:
        item.trial.set_user_attr(FAIL_REASON_ATTR, reason)
        item.trial.set_user_attr("error", error[:2000])
        ctx.study.tell(item.trial, state=TrialState.FAIL, skip_if_finished=True)
        _end_run(ctx.client, item.run_id, run_status, {"optuna.trial_state": "FAIL", "error": error[:5000]})
        self._progress(ctx, item.trial.number, "FAIL", None, error)

    def _progress(self, ctx: _Context, number: int, state: str, value: Optional[float], note: str = "") -> None:
        trials = ctx.study.get_trials(deepcopy=False)  # fresh: the trial's own attributes were set by its task
        best = _best_of(trials)
        if best is not None:
            ctx.client.log_metric(ctx.parent_id, "best_val_pr_auc", best.value, step=number)
            if state == "COMPLETE" and best.number == number:
                ctx.client.set_tag(ctx.parent_id, "best_trial_run_id", best.user_attrs.get(RUN_ATTR, ""))
                ctx.client.set_tag(ctx.parent_id, "best_trial_number", str(best.number))
        finished = sum(t.state in FINISHED for t in trials)
        shown = _with_std(value, next((_std(t) for t in trials if t.number == number), None))
        best_txt = f"{_with_std(best.value, _std(best))} (trial {best.number})" if best is not None else "-"
        elapsed = time.monotonic() - self.sweep_started
        extra = f"  [{note[:120]}]" if note else ""
        print(f"trial {number:3d} {state:8s} value {shown:>7s}  best {best_txt}  "
              f"{finished}/{self.n_trials} finished  elapsed {elapsed:6.1f} s{extra}", file=sys.stderr, flush=True)

    # -- the end -----------------------------------------------------------------------------------------------

    def _finish_parent_metrics(self, ctx: _Context) -> None:
        trials = ctx.study.get_trials(deepcopy=False)
        ctx.client.log_metric(ctx.parent_id, "n_trials_complete",
                              sum(t.state == TrialState.COMPLETE for t in trials))
        ctx.client.log_metric(ctx.parent_id, "n_trials_pruned", sum(t.state == TrialState.PRUNED for t in trials))
        ctx.client.log_metric(ctx.parent_id, "n_trials_failed", sum(t.state == TrialState.FAIL and t.user_attrs.get(
            FAIL_REASON_ATTR) != "surplus" for t in trials))
        self._log_optuna_plots(ctx)

    def _log_optuna_plots(self, ctx: _Context) -> None:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as ovm

        complete = [t for t in ctx.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
        plots = {"optimization_history.png": ovm.plot_optimization_history}
        if len(complete) >= 2:
            plots["param_importances.png"] = ovm.plot_param_importances
            plots["parallel_coordinate.png"] = ovm.plot_parallel_coordinate
        for name, plot in plots.items():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ax = plot(ctx.study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(9, 6)
                fig.tight_layout()
                ctx.client.log_figure(ctx.parent_id, fig, f"optuna/{name}")
                plt.close(fig)
            except Exception as exc:  # e.g. importances need variation among the trials
                log.warning("optuna plot %s skipped: %s", name, exc)

    def _write_results(self, ctx: _Context, stop_reason: str) -> dict[str, Any]:
        trials = ctx.study.get_trials(deepcopy=False)
        best = _best_trial(ctx.study)
        results: dict[str, Any] = {
            "study_name": ctx.study.study_name,
            "storage": redact(self.storage_url or ""),
            "parent_run_id": ctx.parent_id,
            "tracking_uri": redact(self.tracking_uri),
            "status": stop_reason,
            "n_trials": self.n_trials,
            "n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "n_failed": sum(t.state == TrialState.FAIL and t.user_attrs.get(FAIL_REASON_ATTR) != "surplus"
                            for t in trials),
            "pinned_params": _shown(ctx.space.pinned),
            "best_params": dict(best.params) if best else None,
            "best_value": best.value if best else None,
            "best_trial_number": best.number if best else None,
            "best_run_id": best.user_attrs.get(RUN_ATTR) if best else None,
        }
        if best is not None and "val_pr_auc_std" in best.user_attrs:
            results["best_value_std"] = best.user_attrs["val_pr_auc_std"]
        self._save_results(results)
        self._print_table(ctx, trials)
        return results

    def _save_results(self, results: dict[str, Any]) -> None:
        assert self.config is not None
        out = Path(str(self.config.hydra.sweep.dir))
        out.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), out / "optimization_results.yaml")
        self.results_path = out / "optimization_results.yaml"

    def _print_table(self, ctx: _Context, trials: Sequence[FrozenTrial]) -> None:
        rows = sorted(trials, key=lambda t: (t.state != TrialState.COMPLETE, -(t.value or -math.inf), t.number))
        keys = list(ctx.space.distributions)
        short = [k.rsplit(".", 1)[-1] for k in keys]
        lines = [f"{'trial':>5}  {'state':8}  {'val_pr_auc ± std':>16}  " + "  ".join(f"{s:>17}" for s in short)]
        for t in rows:
            if t.user_attrs.get(FAIL_REASON_ATTR) == "surplus":
                continue
            lines.append(f"{t.number:>5}  {t.state.name:8}  {_with_std(t.value, _std(t)):>16}  "
                         + "  ".join(f"{str(t.params.get(k, '-')):>17}" for k in keys))
        best = _best_trial(ctx.study)
        summary = (f"best: trial {best.number}, val_pr_auc {_with_std(best.value, _std(best))}" if best
                   else "no trial completed")
        print("\n".join(["", f"study {ctx.study.study_name} ({redact(self.storage_url or '')})", *lines, summary,
                         f"results: {self.results_path}",
                         f"open the runs: {how_to_open(self.tracking_uri)}  "
                         f"(parent run {ctx.parent_id})"]), file=sys.stderr)

    def _package_enabled(self) -> bool:
        value = self.package
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)

    def _package(self, ctx: _Context, results: dict[str, Any]) -> None:
        best = _best_trial(ctx.study)
        if best is None:
            raise SweeperError(f"study {ctx.study.study_name!r} has no COMPLETE trial (all failed or were "
                               f"pruned): nothing to package or register")
        done = ctx.study.user_attrs.get(PACKAGED_ATTR)
        if done and done.get("trial_number") == best.number:
            print(f"best trial {best.number} is already packaged (run {done.get('run_id')}): nothing to do",
                  file=sys.stderr)
            results["packaged_run_id"] = done.get("run_id")
            return
        earlier = ctx.client.search_runs(
            [ctx.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{ctx.parent_id}' and attributes.status = 'FINISHED' and "
                          f"tags.run_purpose = 'model_packaging' and tags.`optuna.trial_number` = '{best.number}'")
        if earlier:  # packaged by a worker that died before recording it
            record = {"trial_number": best.number, "run_id": earlier[0].info.run_id}
            ctx.study.set_user_attr(PACKAGED_ATTR, record)
            results["packaged_run_id"] = record["run_id"]
            print(f"best trial {best.number} was packaged already (run {record['run_id']})", file=sys.stderr)
            return
        claim = self._claim_packaging(ctx, best)
        if claim is None:
            return
        from src.tracking import TAGS

        run = ctx.client.create_run(
            ctx.experiment_id, run_name="best_model_packaged",
            tags={**TAGS, "mlflow.parentRunId": ctx.parent_id, "run_purpose": "model_packaging",
                  "optuna.study_name": ctx.study.study_name, "optuna.trial_number": str(best.number),
                  "best_trial_run_id": best.user_attrs.get(RUN_ATTR, "")},
        )
        item = _Launched(best, self._trial_id(ctx, best.number), run.info.run_id, dict(best.params))
        overrides = self._job_overrides(ctx, item, stage="package") + ["hydra.sweep.subdir=package"]
        print(f"packaging the best trial ({best.number}, val_pr_auc {_with_std(best.value, _std(best))}): refit on "
              f"the training split, test once, register", file=sys.stderr)
        self.heartbeat.lock = claim
        try:
            ret = self.launcher.launch([overrides], initial_job_idx=0)[0]
        finally:
            self.heartbeat.lock = None
        if ret.status != JobStatus.COMPLETED:
            exc = ret._return_value
            _end_run(ctx.client, item.run_id, "FAILED", {"error": _describe(exc)[:5000]})
            claim.set_user_attr("failed", _describe(exc)[:2000])
            raise SweeperError(f"packaging failed: {' '.join(str(exc).split())}")
        _end_run(ctx.client, item.run_id, "FINISHED", {})
        record = {"trial_number": best.number, "run_id": item.run_id}
        claim.set_user_attr("done", record)
        ctx.study.set_user_attr(PACKAGED_ATTR, record)
        results["packaged_run_id"] = item.run_id
        tags = ctx.client.get_run(item.run_id).data.tags
        for key in ("registered_model_name", "registered_model_version", "promotion_decision"):
            if key in tags:
                results[key] = tags[key]
        self._save_results(results)

    def _claim_packaging(self, ctx: _Context, best: FrozenTrial) -> Optional[optuna.Study]:
        """Exactly one worker packages a study's best trial.

        The claim is the creation of a small marker study, which the storage makes atomic (a unique name): the
        worker that creates it packages, the others see it and stop. A claim whose worker died (no heartbeat for
        the grace period) is superseded by the next attempt's marker, again created atomically.
        """
        for attempt in range(100):
            name = f"{ctx.study.study_name}::package-trial-{best.number}::attempt-{attempt}"
            try:
                claim = optuna.create_study(study_name=name, storage=ctx.storage, direction="maximize")
            except optuna.exceptions.DuplicatedStudyError:
                info = self._claim_info(name, ctx.storage)
                if info.get("done"):
                    print(f"best trial {best.number} was packaged by another worker", file=sys.stderr)
                    return None
                if not info.get("failed") and not self._claim_stale(info):
                    print(f"another worker ({info.get('worker', {}).get('host', '?')}) is packaging best trial "
                          f"{best.number}: this one stops here", file=sys.stderr)
                    return None
                continue
            claim.set_user_attr("worker", self.worker)
            claim.set_user_attr("heartbeat", time.time())
            return claim
        raise SweeperError(f"packaging of study {ctx.study.study_name!r} failed 100 times: see its marker studies")

    def _claim_info(self, name: str, storage: optuna.storages.BaseStorage) -> dict:
        """The claim's record; a marker still empty after the grace period belongs to a worker that died."""
        study_id = storage.get_study_id_from_name(name)
        deadline = time.monotonic() + self.grace_period
        while True:
            info = storage.get_study_user_attrs(study_id)
            if info or time.monotonic() > deadline:
                return info or {"heartbeat": 0.0}
            time.sleep(0.5)

    def _claim_stale(self, info: dict) -> bool:
        worker = info.get("worker")
        if worker and worker.get("host") == self.worker["host"] and self._worker_gone(worker):
            return True
        return time.time() - float(info.get("heartbeat", 0.0)) > self.grace_period

    def _print_start(self, study: optuna.Study, ctx: _Context) -> None:
        trials = study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        pinned = ", ".join(f"{k}={v}" for k, v in _shown(ctx.space.pinned).items()) or "none"
        print(f"study {study.study_name} in {redact(self.storage_url or '')}: {finished}/{self.n_trials} trials "
              f"finished so far; sampler {self.sampler_name}, pruner {self.pruner_name}; pinned: {pinned}",
              file=sys.stderr, flush=True)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if waiting:
            start = ", ".join(f"{k}={v}" for k, v in waiting[0].system_attrs.get("fixed_params", {}).items())
            print(f"first trial: the configured values {start} (hydra.sweeper.start_from_config=false to skip)",
                  file=sys.stderr, flush=True)


@dataclass
class _Context:
    study: optuna.Study
    client: Any
    experiment_id: str
    parent_id: str
    space: _search_space.SearchSpace
    storage: optuna.storages.BaseStorage
    study_id: int


_ABSENT = object()


def _extremes(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]  # type: ignore[attr-defined]


def _task_part(cfg: DictConfig) -> DictConfig:
    """The job's own config, without Hydra's node (which only resolves inside a running job)."""
    task = cfg.copy()
    with read_write(task), open_dict(task):
        task.pop("hydra", None)
    return task


def _check_task_config(cfg: DictConfig, what: str) -> None:
    """Instantiate the task config's structured schema: its __post_init__ range checks run here."""
    try:
        OmegaConf.to_object(_task_part(cfg))
    except Exception as exc:
        raise SweeperError(f"{what}: {' '.join(str(exc).split())}") from None


def _shown(pinned: dict[str, Any]) -> dict[str, Any]:
    """Pinned values as printed and logged: a URL's password (a tracking URI's, say) replaced by ***."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in pinned.items()}


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


def _pop_path(tree: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.get(part) if isinstance(tree, dict) else None
        if not isinstance(tree, dict):
            return
    tree.pop(leaf, None)


def _describe(exc: BaseException) -> str:
    """An error as one line for people: its type, and its message when it has one (Ctrl-C has none)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _std(trial: FrozenTrial) -> Optional[float]:
    return trial.user_attrs.get("val_pr_auc_std")


def _with_std(value: Optional[float], std: Optional[float]) -> str:
    """An objective as shown to people: with its spread over the folds, as every AP we report."""
    if value is None:
        return "-"
    return f"{value:.4f} ± {std:.4f}" if std is not None and math.isfinite(std) else f"{value:.4f}"


def _best_trial(study: optuna.Study) -> Optional[FrozenTrial]:
    return _best_of(study.get_trials(deepcopy=False))


def _best_of(trials: Sequence[FrozenTrial]) -> Optional[FrozenTrial]:
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _end_run(client: Any, run_id: str, status: str, tags: dict[str, str]) -> None:
    """Set the sweeper's verdict on a trial's run; a run the task already ended keeps its own status."""
    try:
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, status=status)
    except TrackingDown:
        raise
    except Exception as exc:
        log.warning("could not update MLflow run %s: %s", run_id, exc)
