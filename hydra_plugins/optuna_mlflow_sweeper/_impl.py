"""The sweep: check, open the stores, run the loop, report, run the final stage.

Invariants it keeps (also across crashes, resumes and several workers on one study):
- the study ends with exactly ``n_trials`` finished (COMPLETE or PRUNED) trials;
- every trial is a nested MLflow run under the study's one parent run, linked both ways;
- no trial stays RUNNING in Optuna, and no run stays RUNNING in MLflow, once its worker is gone;
- nothing is written (no store, no study, no run) before the settings, the search space and the stores are checked.

The plugin knows nothing of the app it sweeps: the app's objective, tags, study identity and final stage are
settings (config.py), and a job talks back through its return value and the public job module (job.py).
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from . import _loop, _space_check, _study
from ._context import PRUNER_ATTR, FailReason, interrupt_handled, sigterm_as_interrupt
from ._errors import SweeperError, TrackingDown
from ._factories import FactoryError, dry_run, make_pruner, make_sampler
from ._final import enabled, run_final
from ._heartbeat import TrialHeartbeat
from ._launch import Jobs
from ._redact import redact
from ._repair import abandon_own_trials, repair
from ._report import finish, start_line, where_to_look, write_results
from ._runs import SWEEP, GuardedClient, Runs, RunStatus, parent_run, wait_for_parent
from ._search_space import start_point, start_point_lost
from ._state import StopReason, SweepState
from ._stores import StoreError, check_tracking_uri, open_experiment
from ._summary import summarise
from ._trials import FINISHED, shown
from ._where import source_tags
from ._worker import Worker
from .config import OptunaMlflowSweeperConf

log = logging.getLogger(__name__)


def settings_from(values: dict[str, Any]) -> OptunaMlflowSweeperConf:
    """The typed settings: Hydra passes the sweeper's node as keyword arguments (nested nodes as configs)."""
    plain = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v for k, v in values.items()}
    merged = OmegaConf.merge(OmegaConf.structured(OptunaMlflowSweeperConf), plain)
    settings = OmegaConf.to_object(merged)
    assert isinstance(settings, OptunaMlflowSweeperConf)
    return settings


def check(s: OptunaMlflowSweeperConf) -> None:
    if s.n_trials < 1:
        raise SweeperError(f"hydra.sweeper.n_trials must be >= 1, got {s.n_trials}")
    if s.timeout is not None and s.timeout <= 0:
        raise SweeperError(f"hydra.sweeper.timeout must be > 0 seconds (or null), got {s.timeout}")
    if s.max_failures < 1:
        raise SweeperError(f"hydra.sweeper.max_failures must be >= 1, got {s.max_failures}")
    if s.heartbeat_interval < 1 or s.grace_period <= s.heartbeat_interval:
        raise SweeperError("hydra.sweeper.grace_period must exceed hydra.sweeper.heartbeat_interval (>= 1 s)")
    if s.convergence.min_complete < 2 or not 0.0 < s.convergence.chance < 1.0:
        raise SweeperError(f"hydra.sweeper.convergence needs min_complete >= 2 and 0 < chance < 1, got "
                           f"min_complete={s.convergence.min_complete}, chance={s.convergence.chance}")
    if s.objective.direction not in ("maximize", "minimize"):
        raise SweeperError(f"hydra.sweeper.objective.direction must be maximize or minimize, "
                           f"got {s.objective.direction!r}")


def check_options(s: OptunaMlflowSweeperConf, distributions: dict[str, Any]) -> None:
    """The sampler and pruner built, and tried on the search space in memory, before any store is touched."""
    for key, options in (("sampler_options", s.sampler_options), ("pruner_options", s.pruner_options)):
        if options is not None and not isinstance(options, dict):
            raise SweeperError(f"hydra.sweeper.{key} must be a mapping of constructor arguments, e.g. "
                               f"hydra.sweeper.{key}={{n_startup_trials:5}}, got {options!r}")
    try:
        sampler = make_sampler(s.sampler, s.sampler_options or {}, s.seed)
        pruner = make_pruner(s.pruner, s.pruner_options or {})
        dry_run(sampler, pruner, distributions, s.sampler, s.pruner)
    except FactoryError as exc:
        raise SweeperError(str(exc)) from None


class OptunaMlflowSweeperImpl(Sweeper):
    def __init__(self, **values: Any) -> None:
        self.settings = settings_from(values)
        self.worker = Worker()
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)
        self.launcher = Jobs(launcher, hydra_context, task_function, config, self.settings.compose_once)

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        # The heartbeat is recorded by this sweeper itself (ask/tell has none of its own).
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        s = self.settings
        check(s)
        space = _space_check.build(dict(s.params), arguments, s.job_context)
        check_options(s, dict(space.distributions))
        base = _space_check.pinned_config(self.hydra_context.config_loader, self.config, space)
        self.launcher.seed(base, space.pinned_overrides)  # the first trial adds plain values to it
        extras = _space_check.preflight(s.preflight, base, space)
        if enabled(s.final.enabled):
            _space_check.check_final(s.preflight, self.hydra_context.config_loader, self.config, space,
                                     list(s.final.overrides), extras)
        try:
            check_tracking_uri(s.tracking_uri)  # an unreachable server fails here, before anything is written
        except StoreError as exc:
            raise SweeperError(str(exc)) from None
        url = _study.storage_url(s.storage)
        storage = _study.open_storage(url, s.heartbeat_interval, s.grace_period)
        task = OmegaConf.to_container(_space_check.task_part(base), resolve=True)
        assert isinstance(task, dict)
        ident = _study.identity(task, space.distributions, [*s.identity.ignore, s.job_context], extras)
        name = s.study_name or _study.derived_name(s.identity.prefix, ident)
        study, created = _study.open_study(name, storage, s.objective.direction, s.objective.name)
        _study.check_identity(study, ident)
        point = start_point(space.distributions, {k: OmegaConf.select(base, k) for k in space.distributions}) \
            if s.start_from_config else {}
        if point and created:
            study.enqueue_trial(point, skip_if_exists=True)
        study.set_user_attr(PRUNER_ATTR, {"name": s.pruner, "options": dict(s.pruner_options or {})})
        try:
            experiment_id = open_experiment(s.tracking_uri, s.experiment_name)
        except StoreError as exc:
            raise SweeperError(str(exc)) from None
        study_id = storage.get_study_id_from_name(study.study_name)
        client = GuardedClient(s.tracking_uri)
        parent_id = parent_run(client, experiment_id, study, created, self._parent_tags(study, url, space),
                               lambda: wait_for_parent(storage, study_id))
        tags = {**source_tags(), **s.run_tags}  # every run says where it came from (command, user, git commit)
        state = SweepState(settings=s, study=study, storage=storage, storage_url=url, study_id=study_id,
                           runs=Runs(client=client, experiment_id=experiment_id, parent_id=parent_id, tags=tags),
                           space=space, worker=self.worker, started=time.monotonic(),
                           out_dir=Path(str(self.config.hydra.sweep.dir)), start_point=point or None)
        repair(state)
        if point and not created and start_point_lost(study.get_trials(deepcopy=False), point):
            study.enqueue_trial(point)  # (skip_if_exists would count the failed copy)
        return self._run(state)

    def _run(self, state: SweepState) -> Any:
        finished_ok, reason, status = False, FailReason.ERROR, RunStatus.FAILED
        try:
            with sigterm_as_interrupt(), TrialHeartbeat(state.storage, self.settings.heartbeat_interval) as heartbeat:
                start_line(state)
                stop = _loop.run(state, self.launcher, heartbeat, _loop.batch_size(self.settings.n_jobs, self.config))
            results = finish(state, stop)
            summarise(state)
            if stop.final_stage_runs and enabled(self.settings.final.enabled):
                run_final(state, self.launcher, results)
                if "final_run_id" in results:  # (not when another worker runs the final stage)
                    summarise(state, {"run_id": results["final_run_id"], "returned": results.get("final"),
                                      "links": results.get("final_links")})
            where_to_look(state)
            finished_ok, status = True, RunStatus.FINISHED
            return results
        except TrackingDown as exc:
            state.runs.down = True  # no more MLflow calls: each would wait for the server again
            reason = FailReason.TRACKING_DOWN
            abandon_own_trials(state, reason)
            write_results(state, StopReason.TRACKING_DOWN)
            done = sum(t.state in FINISHED for t in state.study.get_trials(deepcopy=False))
            raise TrackingDown(
                f"{exc} during the sweep: study {state.study.study_name!r} keeps its {done} finished trials; rerun "
                f"the same command once the server is back: the MLflow runs are repaired from the study and the "
                f"sweep continues") from None
        except (KeyboardInterrupt, SystemExit):
            interrupt_handled()
            reason, status = FailReason.INTERRUPTED, RunStatus.KILLED
            raise
        finally:
            if not finished_ok:
                abandon_own_trials(state, reason)
            if not state.runs.down:
                try:
                    state.runs.client.set_terminated(state.runs.parent_id, status=status)
                except Exception as exc:  # the tracking store may be the thing that failed
                    log.warning("could not mark the parent run %s %s: %s", state.runs.parent_id, status, exc)

    def _parent_tags(self, study: optuna.Study, url: str, space: Any) -> dict[str, str]:
        s = self.settings
        return {
            **source_tags(),
            **s.run_tags,
            "run_purpose": SWEEP,
            "optuna.study_name": study.study_name,
            "optuna.storage": redact(url),
            "optuna.sampler": f"{s.sampler} {json.dumps(s.sampler_options or {})} seed={s.seed}",
            "optuna.pruner": f"{s.pruner} {json.dumps(s.pruner_options or {})}",
            "optuna.n_trials": str(s.n_trials),
            "optuna.objective": f"{s.objective.direction} {s.objective.name}",
            "search_space": json.dumps(space.expressions),
            "pinned": json.dumps(shown(space.pinned), default=str),
        }
