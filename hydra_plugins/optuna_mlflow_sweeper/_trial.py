"""The trial's side of the sweep: report intermediate values and learn whether to stop.

The sweeper only passes plain overrides to the jobs it launches (they may run in other processes or on other
machines), so a job finds its Optuna trial again through the shared storage.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from ._factories import make_pruner

PRUNER_ATTR = "sweeper.pruner"
FOREST_ATTR = "forest_key"  # what decides the trial's result (data, split, folds, the forest's effective settings)
TWIN_ATTR = "same_forest_as_trial"


@lru_cache(maxsize=4)
def _storage(url: str) -> optuna.storages.BaseStorage:
    # SQLite: wait for the sweeper's writes (heartbeats) instead of failing with "database is locked".
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)


def find_trial(study_name: str, storage_url: str, trial_number: int) -> optuna.Trial:
    storage = _storage(storage_url)
    spec = storage.get_study_user_attrs(storage.get_study_id_from_name(study_name)).get(PRUNER_ATTR, {})
    study = optuna.load_study(
        study_name=study_name,
        storage=storage,
        pruner=make_pruner(spec.get("name", "none"), spec.get("options", {})),
    )
    study_id = storage.get_study_id_from_name(study_name)
    return optuna.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, trial_number))


class TrialLink:
    """A job's handle on its Optuna trial: intermediate values for the pruner, and the metrics worth keeping
    in Optuna too (so that the study alone holds every result, whatever happens to the tracking server)."""

    def __init__(self, study_name: str, storage_url: str, trial_number: int) -> None:
        self.trial = find_trial(study_name, storage_url, trial_number)

    def report(self, step: int, value: float, what: str = "") -> None:
        self.trial.report(value, step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after {what or f'step {step}'} (value so far {value:.4f})")

    def record(self, **values: float) -> None:
        for key, value in values.items():
            self.trial.set_user_attr(key, value)

    def earlier_twin(self, key: str) -> Optional[FrozenTrial]:
        """A COMPLETE trial of the study that grew the same forests on the same folds: refitting it would give
        the same value again (TPE proposes the best region repeatedly, and min_samples_split up to
        2 * min_samples_leaf grows the same trees)."""
        self.trial.set_user_attr(FOREST_ATTR, key)
        for earlier in self.trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if earlier.user_attrs.get(FOREST_ATTR) == key and earlier.number != self.trial.number:
                self.trial.set_user_attr(TWIN_ATTR, earlier.number)
                return earlier
        return None
