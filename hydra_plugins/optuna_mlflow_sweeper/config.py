"""The sweeper's settings (``hydra.sweeper.*``), registered as ``hydra/sweeper=optuna_mlflow``."""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaMlflowSweeperConf:
    _target_: str = "hydra_plugins.optuna_mlflow_sweeper.optuna_mlflow_sweeper.OptunaMlflowSweeper"

    # Default: derived from the data, split, evaluation, pinned values and search space, so that rerunning
    # the same command continues the same study and a different objective never mixes into it.
    study_name: Optional[str] = None
    # Any Optuna RDB URL (sqlite:///..., postgresql://...). Default: a SQLite file under multirun_outputs/.
    storage: Optional[str] = None
    # The total number of finished (COMPLETE or PRUNED) trials the study should reach; a rerun continues up to it.
    n_trials: int = 20
    # Stop asking for new trials after this many seconds of this invocation (null = no limit).
    timeout: Optional[float] = None
    # tpe | random | gp | cmaes | qmc; extra constructor arguments in sampler_options.
    sampler: str = "tpe"
    # Null by default, so that a whole dict can be given: hydra.sweeper.sampler_options={n_startup_trials:5}
    sampler_options: Any = None
    seed: int = 0
    # Enqueue the configured values (e.g. model.*) that lie in the search space as the new study's first trial:
    # the sweep starts from what a single run does, so it never reports worse than that run.
    start_from_config: bool = True
    # median | percentile | hyperband | successive_halving | threshold | none; arguments in pruner_options.
    pruner: str = "median"
    pruner_options: Any = None
    # The sweep stops once the study holds this many FAIL trials (the cumulative failure budget).
    max_failures: int = 5
    # Trials launched together (one batch for the launcher). Default: hydra.launcher.n_jobs, else 1.
    n_jobs: Optional[int] = None
    # Search space: key -> Hydra sweep expression. Filled by the search_space config group.
    params: dict[str, str] = field(default_factory=dict)
    # Where the parent and trial runs go: by default the task's own MLflow settings.
    tracking_uri: str = "${mlflow.tracking_uri}"
    experiment_name: str = "${mlflow.experiment_name}"
    # Refit the best trial on the training split, test it and register it at the end of the study.
    package: Any = "${registry.enabled}"
    # A trial whose worker has not written a heartbeat for grace_period seconds is failed as stale.
    heartbeat_interval: int = 5
    grace_period: int = 20


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="optuna_mlflow",
    node=OptunaMlflowSweeperConf,
    provider="optuna_mlflow_sweeper",
)
