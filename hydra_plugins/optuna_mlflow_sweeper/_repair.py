"""Crash repair: after a worker died, no trial stays RUNNING in Optuna and no run stays RUNNING in MLflow.

Order matters: a trial whose job finished (its run is FINISHED with the objective) but whose worker died before
telling Optuna keeps its result; only then are the remaining trials of dead workers failed as stale.

A worker is dead when it is a process of this host that no longer exists, or when its heartbeat is older than the
grace period (Optuna's ``fail_stale_trials``). A finished run whose trial stayed RUNNING longer than the grace
period also means its worker died: a live worker tells Optuna within moments of its job's end.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ._context import FAIL_REASON_ATTR, RUN_ATTR, FailReason
from ._output import say
from ._runs import RunStatus, restore_run
from ._state import RETURNED_ATTR, SweepState
from ._worker import WORKER_ATTR

log = logging.getLogger(__name__)


def repair(state: SweepState) -> None:
    study = state.study
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not state.worker.owns(trial.system_attrs.get(WORKER_ATTR)):
            recover_finished(state, trial)
    optuna.storages.fail_stale_trials(study)  # heartbeat older than the grace period
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.system_attrs.get(WORKER_ATTR)
        if worker is None:
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            gone = now - started > 3 * state.settings.grace_period  # died before its first heartbeat
        else:
            gone = state.worker.sees_gone(worker)
        if gone:
            fail(state, trial.number, FailReason.STALE)
    # (Trials failed by Optuna's heartbeat check carry no fail_reason: they count as stale, not as errors.)
    end_orphan_runs(state)


def fail(state: SweepState, number: int, reason: FailReason) -> None:
    try:
        state.storage.set_trial_user_attr(state.trial_id(number), FAIL_REASON_ATTR, reason.value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return  # it finished (or another worker failed it) meanwhile
    state.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)


def recover_finished(state: SweepState, trial: FrozenTrial) -> bool:
    """A worker killed after its trial's job finished but before telling Optuna: keep the result."""
    run_id = trial.user_attrs.get(RUN_ATTR)
    if not run_id or state.runs.down:
        return False
    run = state.runs.client.get_run(run_id)
    objective = state.settings.objective
    value = run.data.metrics.get(objective.name)
    if run.info.status != RunStatus.FINISHED or value is None:
        return False
    ended_long_ago = run.info.end_time and time.time() - run.info.end_time / 1000 > state.settings.grace_period
    if not (ended_long_ago or state.worker.sees_gone(trial.system_attrs.get(WORKER_ATTR))):
        return False  # its worker may be telling Optuna right now
    trial_id = state.trial_id(trial.number)
    try:
        for key in [objective.spread, *state.settings.progress_metrics]:
            if key and key in run.data.metrics:
                state.storage.set_trial_user_attr(trial_id, key, run.data.metrics[key])
        state.study.tell(trial.number, value)
    except (ValueError, RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
        return False  # finished meanwhile
    state.runs.end(run_id, RunStatus.FINISHED, {"optuna.trial_state": "COMPLETE",
                                        "repaired": "told to Optuna after its worker died"})
    say(f"trial {trial.number}: its worker died after the job finished; result {value:.4f} kept")
    return True


def end_orphan_runs(state: SweepState) -> None:
    """Runs still RUNNING whose trial is not (killed workers, or a crash between two bookkeeping steps)."""
    by_number = {t.number: t for t in state.study.get_trials(deepcopy=False)}
    for run in state.runs.children(RunStatus.RUNNING):
        number = run.data.tags.get("optuna.trial_number", "")
        trial = by_number.get(int(number)) if number.isdigit() else None
        trial_state = trial.state if trial is not None else None
        if trial_state == TrialState.RUNNING:
            continue  # a live trial of another worker
        if run.info.run_name == state.settings.final.run_name and trial_state == TrialState.COMPLETE:
            state.runs.end(run.info.run_id, RunStatus.KILLED, {"error": "the final stage was interrupted"})
        elif trial_state == TrialState.COMPLETE:  # finished in Optuna while MLflow was unreachable
            assert trial is not None
            restore_run(state.runs, run, trial.params, _metrics(state, trial))
            say(f"trial {trial.number}: MLflow run {run.info.run_id} restored from the study")
        else:
            state.runs.end(run.info.run_id, RunStatus.KILLED, {
                "optuna.trial_state": trial_state.name if trial_state is not None else "UNKNOWN",
                "error": "the worker died (killed or crashed) before the trial ended"})


def _metrics(state: SweepState, trial: FrozenTrial) -> dict[str, float]:
    metrics: dict[str, Any] = {state.settings.objective.name: trial.value}
    for key in [state.settings.objective.spread, *state.settings.progress_metrics, *trial.user_attrs.get(
            RETURNED_ATTR, [])]:
        value = trial.user_attrs.get(key) if key else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics[key] = value
    return metrics


def abandon_own_trials(state: SweepState, reason: FailReason) -> None:
    """On the way out after an error, Ctrl-C or SIGTERM: no trial of this invocation stays RUNNING."""
    try:
        for trial in state.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if not state.worker.owns(trial.system_attrs.get(WORKER_ATTR)):
                continue
            fail(state, trial.number, reason)
            if trial.user_attrs.get(RUN_ATTR):
                state.runs.end(trial.user_attrs[RUN_ATTR], RunStatus.KILLED,
                               {"optuna.trial_state": "FAIL", "error": f"sweep {reason}"})
    except Exception as exc:  # best effort (the tracking server may be down): the next start repairs the rest
        log.warning("could not close this sweep's running trials: %s", exc)
