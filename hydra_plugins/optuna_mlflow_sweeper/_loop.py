"""The ask / launch / tell loop.

Invariants (also with several workers on one study):
- the study ends with exactly ``n_trials`` finished (COMPLETE or PRUNED) trials: a trial asked for when the trials
  before it already fill the study is dropped as surplus (trial numbers are assigned atomically by the storage);
- this invocation stops when ``max_failures`` of its own trials failed (earlier invocations' failures are history,
  not a reason to refuse a rerun after the cause was fixed);
- a timeout stops new trials, never the first one (as Optuna's timeout);
- with ``stop_when_converged``, the study stops asking once the rule in _converged says more trials cannot help
  (read from the finished trials only, so every worker reaches the same verdict).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from . import _search_space
from ._context import COUNTED_FAILURES, FAIL_REASON_ATTR, RUN_ATTR, START_ATTR, FailReason, check_interrupted
from ._converged import should_stop
from ._errors import SweeperError, TrackingDown, describe
from ._factories import make_sampler
from ._heartbeat import TrialHeartbeat
from ._output import say
from ._repair import repair
from ._runs import TRIAL, RunStatus
from ._state import Launched, StopReason, SweepState
from ._tell import tell, tell_failed
from ._trials import FINISHED
from ._worker import WORKER_ATTR


def batch_size(settings_jobs: Optional[int], config: DictConfig) -> int:
    if settings_jobs:
        return max(1, int(settings_jobs))
    launcher_jobs = OmegaConf.select(config, "hydra.launcher.n_jobs", default=None)
    if isinstance(launcher_jobs, int) and launcher_jobs != 0:
        return launcher_jobs if launcher_jobs > 0 else (os.cpu_count() or 1)
    return 1


def run(state: SweepState, launcher: Any, heartbeat: TrialHeartbeat, size: int) -> StopReason:
    """Trials until the study is complete, converged or the timeout; raises on a spent budget."""
    s = state.settings
    launched = False
    while True:
        check_interrupted()
        trials = state.study.get_trials(deepcopy=False)
        finished = sum(t.state in FINISHED for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if finished >= s.n_trials and running == 0:
            return StopReason.COMPLETE
        if s.stop_when_converged and finished < s.n_trials and _converged(state, trials, finished):
            return StopReason.CONVERGED
        failures = [t for t in trials if t.state == TrialState.FAIL and state.worker.owns(
            t.system_attrs.get(WORKER_ATTR)) and t.user_attrs.get(FAIL_REASON_ATTR) in COUNTED_FAILURES]
        if len(failures) >= s.max_failures:
            last = failures[-1].user_attrs.get("error", "see the trials' error tags")
            raise SweeperError(f"failure budget spent: {len(failures)} trials of study {state.study.study_name!r} "
                               f"failed in this run (last: {last}); fix the cause and rerun, or raise "
                               f"hydra.sweeper.max_failures")
        if launched and s.timeout is not None and time.monotonic() - state.started >= s.timeout:
            say(f"timeout of {s.timeout:g} s reached: {finished}/{s.n_trials} trials finished; rerun the same "
                f"command to continue")
            return StopReason.TIMEOUT
        room = s.n_trials - finished - running
        if room <= 0:  # the rest run in other workers: wait for them to end (or to go stale)
            time.sleep(s.heartbeat_interval)
            repair(state)
            continue
        batch = [b for b in (ask(state, heartbeat, trials, i) for i in range(min(size, room))) if b]
        if batch:
            run_batch(state, launcher, heartbeat, batch)
            launched = True


def _converged(state: SweepState, trials: list, finished: int) -> bool:
    s, c = state.settings, state.settings.convergence
    why = should_stop(trials, s.objective.direction, c.uncertainty or s.objective.spread, c.min_complete, c.chance,
                      s.baseline)
    if why is None:
        return False
    say(f"stopping early: {why}; {finished}/{s.n_trials} trials finished (hydra.sweeper.stop_when_converged=false "
        f"runs them all)")
    state.stopped_early = f"{why}; {finished} of {s.n_trials} trials finished"
    if not state.runs.down:
        state.runs.client.set_tag(state.runs.parent_id, "stopped_early", why)
    return True


def _reseed(state: SweepState, n_existing: int, others_running: bool) -> None:
    # Seeded per position in the study: a resumed study does not replay its first proposals (optuna#3255);
    # concurrent workers add their own entropy so they do not propose the same point.
    seed = state.settings.seed + n_existing + (state.worker.seed_entropy() if others_running else 0)
    state.study.sampler = make_sampler(state.settings.sampler, state.settings.sampler_options or {},
                                       seed % (2**32))


def ask(state: SweepState, heartbeat: TrialHeartbeat, seen: list, asked: int) -> Optional[Launched]:
    """A new trial and its run; ``seen`` is the study as read just before this batch, ``asked`` the trials this
    batch asked for already."""
    _reseed(state, len(seen) + asked, any(t.state == TrialState.RUNNING for t in seen))
    trial = state.study.ask(dict(state.space.distributions))
    trial_id = state.trial_id(trial.number)
    heartbeat.add(trial_id)
    state.storage.set_trial_system_attr(trial_id, WORKER_ATTR, state.worker.as_attr())
    if surplus(trial.number, seen, asked, state.settings.n_trials,
               lambda: state.study.get_trials(deepcopy=False)):
        trial.set_user_attr(FAIL_REASON_ATTR, FailReason.SURPLUS.value)
        state.study.tell(trial, state=TrialState.FAIL)
        heartbeat.discard(trial_id)
        return None
    if state.start_point and state.storage.get_trial(trial_id).system_attrs.get("fixed_params") == state.start_point:
        trial.set_user_attr(START_ATTR, True)  # the configured values: never pruned (see TrialLink.report)
    run_id = state.runs.create_child(f"trial-{trial.number:03d}", TRIAL, state.study.study_name, trial.number)
    trial.set_user_attr(RUN_ATTR, run_id)
    return Launched(trial=trial, number=trial.number, trial_id=trial_id, run_id=run_id, params=dict(trial.params))


def surplus(number: int, seen: Sequence[FrozenTrial], asked: int, n_trials: int,
            earlier: Callable[[], Sequence[FrozenTrial]]) -> bool:
    """Exactly n_trials: a trial is surplus if the trials before it already fill the study (pure, but for
    ``earlier``, which reads the study again). Trial numbers are assigned atomically, so if ours follows what was seen
    (and this batch's own), no other worker added a trial in between; and trials only ever leave the count (by
    failing), so the count seen is an upper bound: below n_trials, the study is not full, without reading it again
    (the read grows with the study)."""
    if number == len(seen) + asked and sum(t.state != TrialState.FAIL for t in seen) + asked < n_trials:
        return False
    return sum(t.number < number and t.state != TrialState.FAIL for t in earlier()) >= n_trials


def job_overrides(state: SweepState, item: Launched, stage: str) -> list[str]:
    """What a job is given: the pinned values, its parameters, and its context (see job.JobContext)."""
    node = state.settings.job_context
    fmt = _search_space.format_value
    return [
        *state.space.pinned_overrides,
        *_search_space.to_overrides(item.params),
        f"{node}.study_name={fmt(state.study.study_name)}",
        f"{node}.storage={fmt(state.storage_url)}",
        f"{node}.trial_number={item.number}",
        f"{node}.parent_run_id={state.runs.parent_id}",
        f"{node}.run_id={item.run_id}",
        f"{node}.stage={stage}",
    ]


def run_batch(state: SweepState, launcher: Any, heartbeat: TrialHeartbeat, batch: list[Launched]) -> None:
    overrides = [job_overrides(state, item, "trial") for item in batch]
    try:
        returns = launcher.launch(overrides, initial_job_idx=batch[0].number)
    except BaseException as exc:
        for item in batch:
            reason = FailReason.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else FailReason.ERROR
            tell_failed(state, item, reason, describe(exc), RunStatus.KILLED)
            heartbeat.discard(item.trial_id)
        raise
    down: Optional[TrackingDown] = None
    for item, ret in zip(batch, returns, strict=True):
        try:
            tell(state, item, ret)  # Optuna first, then MLflow
        except TrackingDown as exc:
            down = down or exc  # the other trials of the batch are still told to Optuna
            state.runs.down = True
        heartbeat.discard(item.trial_id)
    if down is not None:
        raise down
