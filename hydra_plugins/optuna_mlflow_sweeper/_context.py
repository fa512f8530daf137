"""The job's side of the sweep, as job.py publishes it (the contract is described in the plugin's README): the
context a job is given, its link to its trial, the attribute names and reasons, and interrupts. Importing it is cheap:
optuna is imported only when a link is opened."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import optuna

# Trial user attributes (names other tools may read).
RUN_ATTR = "mlflow_run_id"  # the trial -> MLflow link
FAIL_REASON_ATTR = "fail_reason"  # a FailReason
ERROR_ATTR = "error"
NOTE_ATTR = "sweeper.note"  # a job's note for its progress line, e.g. why it did not refit
PARTIAL_ATTR = "sweeper.partial"  # a pruned trial's last intermediate value and where it was taken: [what, value]
START_ATTR = "sweeper.start_point"  # True on the trial that runs the configured values (start_from_config)
# Study user attributes.
PARENT_ATTR = "mlflow_parent_run_id"
PRUNER_ATTR = "sweeper.pruner"


class Stage(StrEnum):
    """Which job this is (JobContext.stage)."""

    TRIAL = "trial"  # a trial of the study
    FINAL = "final"  # the final stage, after the study


TRIAL, FINAL = Stage.TRIAL, Stage.FINAL


class FailReason(StrEnum):
    """Why a trial is FAIL (the trial's ``fail_reason``; the stored values are these strings)."""

    ERROR = "error"  # its job raised
    NAN = "nan"  # its objective was not a finite number
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM
    STALE = "stale: its worker died"  # no heartbeat for the grace period, or a dead process
    SURPLUS = "surplus"  # asked for when the trials before it already filled the study
    TRACKING_DOWN = "infrastructure: tracking server unreachable"


# What spends the failure budget: a job's own errors, not the infrastructure's or a person's (stored values compare
# equal to the members: StrEnum).
COUNTED_FAILURES = frozenset({FailReason.ERROR, FailReason.NAN})


@dataclass
class JobContext:
    """Set by the sweeper for each job it launches; empty in a single run."""

    study_name: Optional[str] = None
    storage: Optional[str] = None
    trial_number: Optional[int] = None
    parent_run_id: Optional[str] = None
    run_id: Optional[str] = None
    stage: str = Stage.TRIAL.value  # a Stage ("trial" or "final"); a str field for OmegaConf

    def __post_init__(self) -> None:
        if self.stage not in tuple(Stage):
            raise ValueError(f"stage must be {' or '.join(Stage)}, got {self.stage!r}")

    @property
    def in_sweep(self) -> bool:
        return self.trial_number is not None and bool(self.storage) and bool(self.study_name)


@lru_cache(maxsize=4)
def _storage(url: str) -> optuna.storages.BaseStorage:
    import optuna

    # SQLite: wait for the sweeper's writes (heartbeats) instead of failing with "database is locked".
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def recorded_trial(context: JobContext) -> optuna.trial.FrozenTrial:
    """The job's trial as the study records it (its parameters, state, value and user attributes): what a final
    stage reads of the trial it runs again, e.g. a result the trial kept for it."""
    assert context.in_sweep, "recorded_trial needs the context the sweeper passes to its jobs"
    storage = _storage(str(context.storage))
    study_id = storage.get_study_id_from_name(str(context.study_name))
    return storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study_id, int(context.trial_number or 0)))


class TrialLink:
    """A job's handle on its Optuna trial (``trial``, a plain ``optuna.Trial``): intermediate values for the pruner,
    and notes for the sweeper's progress line."""

    def __init__(self, context: JobContext) -> None:
        import optuna

        from ._factories import make_pruner

        assert context.in_sweep, "a TrialLink needs the context the sweeper passes to its jobs"
        storage = _storage(str(context.storage))
        study_id = storage.get_study_id_from_name(str(context.study_name))
        spec = storage.get_study_user_attrs(study_id).get(PRUNER_ATTR, {})
        study = optuna.load_study(study_name=context.study_name, storage=storage,
                                  pruner=make_pruner(spec.get("name", "none"), spec.get("options", {})))
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(context.trial_number or 0))
        self.trial = optuna.Trial(study, trial_id)
        # The configured values' trial is the sweep's reference ("never worse than a single run"): never pruned, even
        # when another worker's trials set the bar at a rung first.
        self.is_start = bool(storage.get_trial_user_attrs(trial_id).get(START_ATTR))

    def report(self, step: int, value: float, what: str = "", decide: bool = True) -> None:
        """Report an intermediate value; raises ``optuna.TrialPruned`` when the pruner says stop (asked only with
        ``decide``: a job's last step has nothing left to save). The configured values' trial asks too and is never
        pruned."""
        import optuna

        check_interrupted()  # a Ctrl-C or SIGTERM a library swallowed stops the job here, between two steps
        self.trial.report(value, step)
        # The configured trial asks too, and goes on whatever the answer: asking is what records its value at a
        # rung (successive halving), so that it sets the bar there that the other trials must meet.
        if decide and self.trial.should_prune() and not self.is_start:
            where = what or f"step {step}"
            self.trial.set_user_attr(PARTIAL_ATTR, [where, value])  # not comparable with finished trials' values
            raise optuna.TrialPruned(f"pruned after {where} (value so far {value:.4f})")

    def note(self, text: str) -> None:
        self.trial.set_user_attr(NOTE_ATTR, text)


class Terminated(KeyboardInterrupt):
    """A SIGTERM (what ``timeout``, ``kill`` and schedulers send), raised where Ctrl-C would be: a sweep fails its
    running trial as interrupted and ends its runs KILLED, as for Ctrl-C."""


# A signal's exception is raised wherever Python happens to be; inside a garbage-collector or weakref callback
# (SQLAlchemy has many) CPython prints "Exception ignored" and goes on, and the interrupt is lost. So the handler
# also records it, and the sweep and its jobs re-raise it at the next safe point (check_interrupted).
_PENDING: list[KeyboardInterrupt] = []


def check_interrupted() -> None:
    """Raise the interrupt a signal handler raised where it could not propagate (see _PENDING)."""
    if _PENDING:
        raise _PENDING.pop()


def interrupt_handled() -> None:
    """The interrupt reached its handler: nothing is pending any more."""
    _PENDING.clear()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While the block runs (in the main thread): SIGTERM raises Terminated, SIGINT KeyboardInterrupt, each also
    recorded so that check_interrupted raises it if it was swallowed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        exc = Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()
        _PENDING[:] = [exc]
        raise exc

    default_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:  # the interrupt is pending, not lost: no "Exception ignored" traceback
        if not isinstance(info.exc_value, KeyboardInterrupt):
            default_hook(info)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = default_hook
        for sig, old in previous.items():
            signal.signal(sig, old)
