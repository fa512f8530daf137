"""Telling Optuna how a job ended (first), then MLflow.

A job's return value is the contract: a number is the objective; a mapping holds the objective under
``objective.name`` and other values, which are kept on the trial (numbers, booleans, short strings). A job that
raised ``optuna.TrialPruned`` is PRUNED (its run KILLED); any other exception, or a value that is not a finite
number, fails the trial (its run FAILED) with the reason recorded on both.
"""

from __future__ import annotations

import contextlib
import io
import math
from typing import Any, Optional

import optuna
from hydra.core.utils import JobReturn, JobStatus
from optuna.trial import TrialState

from ._context import ERROR_ATTR, FAIL_REASON_ATTR, FailReason
from ._errors import describe
from ._report import progress
from ._runs import RunStatus
from ._state import RETURNED_ATTR, Launched, SweepState


def outcome(ret: JobReturn) -> tuple[Any, Optional[BaseException]]:
    """(return value, None) for a job that completed, (None, its exception) for one that raised."""
    if ret.status == JobStatus.COMPLETED:
        return ret.return_value, None
    try:
        # Hydra's public accessor re-raises the job's exception, after printing the job's overrides to stderr
        # (secrets in URLs included): the sweeper reports the failure itself, in one redacted line.
        with contextlib.redirect_stderr(io.StringIO()):
            ret.return_value  # noqa: B018
    except BaseException as exc:
        return None, exc
    return None, RuntimeError(f"the job ended with status {ret.status}")


def kept(returned: Any, leave_out: str = "") -> dict[str, Any]:
    """What of a job's returned mapping is kept: numbers, booleans and short strings (pure)."""
    if not isinstance(returned, dict):
        return {}
    return {str(k): v for k, v in returned.items() if k != leave_out and (
        isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 2000))}


LINKS = "links"  # in a final job's returned mapping: {label: link} for the parent run's description


def links_of(returned: Any) -> dict[str, str]:
    """The links a final job returned for people to open: ``{label: href}``, both strings (pure). An href is a URL
    or an MLflow UI fragment (``#/models/<name>/versions/<n>``)."""
    links = returned.get(LINKS) if isinstance(returned, dict) else None
    if not isinstance(links, dict):
        return {}
    return {str(k): v for k, v in links.items() if isinstance(v, str) and len(v) < 2000}


def objective_of(returned: Any, name: str) -> tuple[float, dict[str, Any]]:
    """The objective and the other values a job returned (pure)."""
    others = kept(returned, leave_out=name)
    if isinstance(returned, dict):
        returned = returned.get(name)
    try:
        return float(returned), others
    except (TypeError, ValueError):
        return float("nan"), others


def tell(state: SweepState, item: Launched, ret: JobReturn) -> None:
    returned, exc = outcome(ret)
    if exc is None:
        name = state.settings.objective.name
        value, others = objective_of(returned, name)
        if not math.isfinite(value):
            tell_failed(state, item, FailReason.NAN, f"the objective {name} is {value!r}, not a number")
            return
        returned_values = {**others, name: value} if isinstance(returned, dict) else others
        for key, extra in returned_values.items():  # the objective too: a job may read a whole result back
            state.storage.set_trial_user_attr(item.trial_id, key, extra)
        if returned_values:
            state.storage.set_trial_user_attr(item.trial_id, RETURNED_ATTR, sorted(returned_values))
        state.study.tell(item.trial, value)
        state.runs.end(item.run_id, RunStatus.FINISHED, {"optuna.trial_state": "COMPLETE"})
        progress(state, item.number, "COMPLETE", value)
        return
    if isinstance(exc, optuna.TrialPruned):
        state.study.tell(item.trial, state=TrialState.PRUNED)
        # KILLED, as MLflow has no "pruned" status: the run's name says it, so that the run list tells a pruned
        # trial from a failed one without opening it.
        state.runs.end(item.run_id, RunStatus.KILLED, {"optuna.trial_state": "PRUNED",
                                               "mlflow.runName": f"trial-{item.number:03d} pruned"})
        progress(state, item.number, "PRUNED", None, str(exc))
        return
    tell_failed(state, item, FailReason.ERROR, describe(exc))


def tell_failed(state: SweepState, item: Launched, reason: FailReason, error: str,
                run_status: RunStatus = RunStatus.FAILED) -> None:
    state.storage.set_trial_user_attr(item.trial_id, FAIL_REASON_ATTR, reason.value)
    state.storage.set_trial_user_attr(item.trial_id, ERROR_ATTR, error[:2000])
    state.study.tell(item.number, state=TrialState.FAIL, skip_if_finished=True)
    state.runs.end(item.run_id, run_status, {"optuna.trial_state": "FAIL", ERROR_ATTR: error[:5000]})
    progress(state, item.number, "FAIL", None, error)
