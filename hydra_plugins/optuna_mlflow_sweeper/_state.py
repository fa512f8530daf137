"""What one invocation of the sweeper works with, passed explicitly from step to step."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Optional

import optuna

from ._runs import Runs
from ._search_space import SearchSpace
from ._worker import Worker
from .config import OptunaMlflowSweeperConf

RETURNED_ATTR = "sweeper.returned"  # trial user attribute: the names of the values its task returned


class StopReason(StrEnum):
    """Why this invocation's loop ended (the results file's ``status``)."""

    COMPLETE = "complete"  # the study holds n_trials finished trials
    CONVERGED = "converged"  # the stopping rule ended it early
    TIMEOUT = "timeout"  # hydra.sweeper.timeout: no new trial started
    TRACKING_DOWN = "tracking server unreachable"

    @property
    def final_stage_runs(self) -> bool:
        """A study that ended of itself goes on to its final stage; one cut short does not."""
        return self in (StopReason.COMPLETE, StopReason.CONVERGED)


@dataclass(kw_only=True)
class Launched:
    """A trial in flight: its Optuna handle (a Trial, or the FrozenTrial of the final stage) and its MLflow run."""

    trial: Any
    number: int
    trial_id: int
    run_id: str
    params: dict[str, Any]


@dataclass(kw_only=True)
class SweepState:
    settings: OptunaMlflowSweeperConf
    study: optuna.Study
    storage: optuna.storages.BaseStorage
    storage_url: str
    study_id: int
    runs: Runs
    space: SearchSpace
    worker: Worker
    started: float  # time.monotonic() when this invocation started its loop
    out_dir: Path  # the sweep folder (results file, job outputs)
    stopped_early: Optional[str] = None  # the stopping rule's reason, once it ended the study (see _converged)
    start_point: Optional[dict[str, Any]] = None  # the configured values queued as a trial (start_from_config)

    def trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
