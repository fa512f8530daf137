"""The final stage: after a complete study, one job with the best trial's parameters (e.g. refit, test, register),
run by exactly one worker (see _claim), as a child run of the parent. Runs again only for a new best trial."""

from __future__ import annotations

import contextlib
from typing import Any

from ._claim import acquire, keepalive, release
from ._context import RUN_ATTR
from ._errors import SweeperError, describe, one_line
from ._loop import job_overrides
from ._output import say
from ._report import save_results
from ._runs import RunStatus
from ._state import Launched, SweepState
from ._tell import kept, links_of, outcome
from ._trials import best_of, chosen, start_trial, with_spread

FINAL_ATTR = "sweeper.final"  # study user attribute: {"trial_number", "run_id"} of the finished final stage


def enabled(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def run_final(state: SweepState, launcher: Any, results: dict[str, Any]) -> None:
    s = state.settings
    trials = state.study.get_trials(deepcopy=False)
    best = chosen(trials, s.objective.direction, s.baseline)  # the best that beat the configured values, else them
    if best is None:
        raise SweeperError(f"study {state.study.study_name!r} has no COMPLETE trial (all failed or were pruned): "
                           f"nothing for the final stage ({s.final.run_name})")
    if _already_done(state, best.number, results):
        return
    marker = acquire(state.storage, state.study.study_name, best.number, state.worker, s.grace_period)
    if marker is None or _already_done(state, best.number, results):
        if marker is not None:
            release(state.storage, state.study.study_name, best.number)
        return
    run_id = state.runs.create_child(s.final.run_name, s.final.purpose, state.study.study_name, best.number,
                                     {"best_trial_run_id": best.user_attrs.get(RUN_ATTR, "")})
    item = Launched(trial=best, number=best.number, trial_id=state.trial_id(best.number), run_id=run_id,
                    params=dict(best.params))
    overrides = [*job_overrides(state, item, "final"), *s.final.overrides, "hydra.sweep.subdir=final"]
    spread = best.user_attrs.get(s.objective.spread) if s.objective.spread else None
    start = start_trial(trials)
    which = ("the configured values: no trial beat them with confidence" if start is not None and s.baseline.diff
             and best.number == start.number and best_of(trials, s.objective.direction) is not best else "the best")
    say(f"final stage ({s.final.run_name}) for trial {best.number} ({which}; {s.objective.name} "
        f"{with_spread(best.value, spread)})")
    with keepalive(marker, s.heartbeat_interval):
        ret = launcher.launch([overrides], initial_job_idx=0)[0]
    returned, exc = outcome(ret)
    if exc is not None:
        state.runs.end(run_id, RunStatus.FAILED, {"error": describe(exc)[:5000]})
        marker.set_user_attr("failed", describe(exc)[:2000])
        if isinstance(exc, SweeperError):
            raise exc
        raise SweeperError(f"the final stage ({s.final.run_name}) failed: {one_line(exc)}")
    record_done(state, marker, best.number, run_id)
    results["final_run_id"] = run_id
    if kept(returned):
        results["final"] = kept(returned)
    if links_of(returned):
        results["final_links"] = links_of(returned)
    save_results(state, results)


def record_done(state: SweepState, marker: Any, number: int, run_id: str) -> None:
    """The stage's run FINISHED, then the record in its marker and in the study, then the markers removed. Another
    worker that sees the FINISHED run in between records it as done and removes the markers itself (_already_done):
    the marker may be gone when this worker writes to it, and then there is nothing left to write there."""
    state.runs.end(run_id, RunStatus.FINISHED, {})
    record = {"trial_number": number, "run_id": run_id}
    with contextlib.suppress(KeyError):  # the marker study, deleted by that other worker
        marker.set_user_attr("done", record)
    state.study.set_user_attr(FINAL_ATTR, record)
    release(state.storage, state.study.study_name, number)


def _already_done(state: SweepState, number: int, results: dict[str, Any]) -> bool:
    """The final stage of this trial ran already: recorded in the study, or (its worker died before recording it)
    a FINISHED final run of the trial under the parent."""
    s = state.settings
    done = state.study.user_attrs.get(FINAL_ATTR)
    if not (done and done.get("trial_number") == number):
        found = state.runs.client.search_runs(
            [state.runs.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{state.runs.parent_id}' and attributes.status = 'FINISHED' "
                          f"and tags.run_purpose = '{s.final.purpose}' and tags.`optuna.trial_number` = '{number}'")
        if not found:
            return False
        done = {"trial_number": number, "run_id": found[0].info.run_id}
        state.study.set_user_attr(FINAL_ATTR, done)
    say(f"the final stage of best trial {number} ran already (run {done['run_id']}): nothing to do")
    release(state.storage, state.study.study_name, number)
    results["final_run_id"] = done["run_id"]
    return True
