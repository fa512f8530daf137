"""The sweeper's settings (``hydra.sweeper.*``), registered as ``hydra/sweeper=optuna_mlflow``.

Everything a particular app decides (its objective, its run tags, what identifies its studies, its final stage) is a
setting here with a neutral default; the app sets its own values in its config.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class ObjectiveConf:
    # The metric the task returns (its return value, or this key of the mapping it returns); also the name Optuna
    # shows for the objective and the metric name of the trials' MLflow runs.
    name: str = "objective"
    direction: str = "maximize"  # or minimize
    # A companion value the task returns (e.g. the spread over folds), printed as "value ± spread"; null = none.
    spread: Optional[str] = None


@dataclass
class StudyIdentityConf:
    # The derived study name is "<prefix>-<digest of the pinned config and the search space>".
    prefix: str = "study"
    # Config keys that do not change the objective (stores, output switches, cores): left out of the digest.
    ignore: list[str] = field(default_factory=list)


@dataclass
class FinalStageConf:
    # After a complete study, one more job runs with the best trial's parameters (e.g. refit and test), claimed by
    # exactly one worker, as a child run of the parent named run_name.
    enabled: Any = False
    run_name: str = "final"
    purpose: str = "final_stage"  # its run_purpose tag
    overrides: list[str] = field(default_factory=list)  # extra overrides for that job only


@dataclass
class ConvergenceConf:
    # The value the task returns that measures a trial's own uncertainty (e.g. the standard error of a mean over
    # folds); null = the objective's spread. A gain smaller than the best trial's is not worth another trial.
    uncertainty: Optional[str] = None
    min_complete: int = 5  # complete trials before the rule may stop the study
    chance: float = 0.05  # stop when the chance that one more trial beats the best by more than that is below this


@dataclass
class BaselineConf:
    # The values a job returns that compare its trial with the start trial (the configured values, start_from_config)
    # on the same data: the paired difference in the objective and its 95 % interval. With them the sweep says whether
    # a trial beat the configured values with confidence, and the final stage runs the best trial that did (else the
    # configured values' trial). Null: no comparison, the final stage runs the best trial.
    diff: Optional[str] = None
    low: Optional[str] = None
    high: Optional[str] = None


@dataclass
class OptunaMlflowSweeperConf:
    _target_: str = "hydra_plugins.optuna_mlflow_sweeper.optuna_mlflow_sweeper.OptunaMlflowSweeper"

    # Default: derived from the pinned config and the search space (see identity), so that rerunning the same command
    # continues the same study and a different objective never mixes into it.
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
    # Enqueue the configured values that lie in the search space as the new study's first trial: the sweep starts
    # from what a single run does, so it never reports worse than that run.
    start_from_config: bool = True
    # End the study before n_trials when one more trial is unlikely to beat the best by more than its uncertainty
    # (the rule: _converged.py and the README); the reason is printed and kept on the parent run.
    stop_when_converged: bool = False
    convergence: ConvergenceConf = field(default_factory=ConvergenceConf)
    # median | percentile | hyperband | successive_halving | threshold | none; arguments in pruner_options.
    pruner: str = "median"
    pruner_options: Any = None
    # This invocation stops once this many of its own trials have failed (the failure budget).
    max_failures: int = 5
    # Trials launched together (one batch for the launcher). Default: hydra.launcher.n_jobs, else 1.
    n_jobs: Optional[int] = None
    # With Hydra's basic launcher, compose a trial's config once and set each trial's values on a copy, instead of
    # composing the whole config again per trial (~0.2 s each). Other launchers are used as they are.
    compose_once: bool = True
    # Search space: key -> Hydra sweep expression.
    params: dict[str, str] = field(default_factory=dict)
    # Where the parent and trial runs go.
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment_name: str = "optuna-sweep"
    objective: ObjectiveConf = field(default_factory=ObjectiveConf)
    baseline: BaselineConf = field(default_factory=BaselineConf)
    # Values the task returns beside the objective that each progress line shows (e.g. fit_seconds).
    progress_metrics: list[str] = field(default_factory=list)
    # Tags on every run the sweeper creates (parent, trials, final stage).
    run_tags: dict[str, str] = field(default_factory=dict)
    # Optuna's plots on the parent run (history, importances, parallel coordinates; ~0.2 s a sweep).
    log_plots: bool = True
    identity: StudyIdentityConf = field(default_factory=StudyIdentityConf)
    # The config node through which each job learns its study, trial and run (a job.JobContext in the app's schema).
    job_context: str = "sweep"
    # "module.function" called before any store is written, with the composed task config of the pinned values and
    # of every extreme of the search space: it raises on what a trial would fail on (a bad data file, a value the
    # model rejects), and may return a mapping (for the pinned config) that becomes part of the study's identity,
    # e.g. the data's sha256, so that other data never continues a study.
    preflight: Optional[str] = None
    final: FinalStageConf = field(default_factory=FinalStageConf)
    # A trial whose worker has not written a heartbeat for grace_period seconds is failed as stale.
    heartbeat_interval: int = 5
    grace_period: int = 20


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="optuna_mlflow",
    node=OptunaMlflowSweeperConf,
    provider="optuna_mlflow_sweeper",
)
