"""``python -m src.train`` trains and scores one model; ``python -m src.train --multirun`` runs an Optuna study.

Every job is one MLflow run. Under the sweeper a job is a trial (cross-validation on the training split) or the
final packaging job (refit, test once, register).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from src import tracking
from src.config import Config, UserError, register_configs, validate
from src.data import load, split
from src.evaluation import cross_validate, plots
from src.model import build_model, forest_key

register_configs()  # Hydra composes the config before main() runs: the schema must be known first.


class ObjectiveError(ValueError):
    pass


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra's task function: returns the objective, which the sweeper maximises."""
    try:
        typed = validate(cfg)
        if typed.sweep.stage == "package":
            from src.registry import package_best

            return package_best(typed, cfg)
        return train(typed, cfg)
    except UserError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def train(cfg: Config, raw_cfg: DictConfig) -> float:
    """Cross-validate one configuration on the training split and record it as one MLflow run."""
    data = load(cfg.dataset)
    parts = split(data, cfg.split, cfg.evaluation)
    link = None
    if cfg.sweep.trial_number is not None and cfg.sweep.storage:
        from hydra_plugins.optuna_mlflow_sweeper._trial import TrialLink

        link = TrialLink(cfg.sweep.study_name, cfg.sweep.storage, cfg.sweep.trial_number)
    log = tracking.RunLogger(cfg.mlflow.tracking_uri)
    experiment_id = None
    try:
        experiment_id = tracking.connect(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name)
    except tracking.TrackingError as exc:
        if link is None or not cfg.sweep.run_id:
            raise  # a single run has nowhere else to keep its result: stop before the work
        log.lost = str(exc)  # a trial still computes its objective; Optuna keeps it

    started = time.perf_counter()
    # Optuna steps: the first fold's early look (if any) is step 0, so that every trial of a study reports the
    # same steps; fold k is step k + 1.
    look = cfg.evaluation.first_look_trees if link is not None else None
    first_fold_step = 0 if look is None else 1

    def on_look(trees: int, ap: float, seconds: float) -> None:
        log(mlflow.log_metrics, {"val_pr_auc_first_look": ap, "fit_seconds": seconds}, step=0)
        assert link is not None
        link.report(0, ap, f"the first {trees} trees of fold 1")

    def on_fold(fold: int, mean_so_far: float, seconds: float) -> None:
        # fit_seconds so far too: a pruned trial's run still says how long it fitted
        log(mlflow.log_metrics, {"val_pr_auc_running_mean": mean_so_far, "fit_seconds": seconds}, step=fold)
        if link is not None:
            link.report(first_fold_step + fold, mean_so_far, f"fold {fold + 1}")
        elif cfg.sweep.trial_number is None:  # a single run: show that it is moving
            print(f"fold {fold + 1}/{len(parts.folds)} done, mean AP so far {mean_so_far:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    run_name = f"trial-{cfg.sweep.trial_number:03d}" if cfg.sweep.trial_number is not None else None
    with tracking.tracked_run(cfg, experiment_id, run_name, log) as run:
        log(mlflow.log_params, tracking.run_params(cfg, data))
        log(mlflow.set_tags, tracking.run_tags(cfg, data, "hyperparameter_tuning"))
        log(tracking.log_dataset, data, context="training")
        log(mlflow.log_dict, tracking.loggable_config(raw_cfg), "config/config.yaml")
        twin = link.earlier_twin(result_key(cfg, data)) if link is not None else None
        if twin is not None:
            return _same_as(twin, log, link)
        result = cross_validate(build_model(cfg.model), data, parts, on_fold=on_fold, look_trees=look,
                                on_look=on_look)
        if not math.isfinite(result.pr_auc):
            raise ObjectiveError(f"the objective is {result.pr_auc} (fold APs {result.fold_pr_auc})")
        metrics = {"val_pr_auc": result.pr_auc, "val_roc_auc": result.roc_auc, "fit_seconds": result.fit_seconds}
        if math.isfinite(result.pr_auc_std):
            metrics["val_pr_auc_std"] = result.pr_auc_std
        # fit_seconds is already there: logged after each fold (cumulative; its last step is the total)
        log(mlflow.log_metrics, {k: v for k, v in metrics.items() if k != "fit_seconds"})
        for fold, value in enumerate(result.fold_pr_auc):
            log(mlflow.log_metric, "val_pr_auc_fold", value, step=fold)
        if cfg.mlflow.log_plots and log.lost is None:
            y_oof = data.y[result.oof_index]
            title = f"out-of-fold, {len(parts.folds)} fold(s)"
            log(tracking.log_figures, plots(y_oof, result.oof_proba, cfg.evaluation.threshold, title))
        if link is not None:
            link.record(**{k: v for k, v in metrics.items() if k != "val_pr_auc"})
            if log.lost is not None:
                link.record(mlflow_lost=log.lost)
    if cfg.sweep.trial_number is None:
        print(f"val_pr_auc = {result.pr_auc:.4f} ± {result.pr_auc_std:.4f} (mean ± std over "
              f"{len(result.fold_pr_auc)} folds of the training split), val_roc_auc = {result.roc_auc:.4f}, "
              f"fit {result.fit_seconds:.1f} s", file=sys.stderr)
        if log.lost is not None:
            raise tracking.TrackingUnavailable(f"{log.lost}: this run's result (val_pr_auc {result.pr_auc:.4f}) was "
                                               f"not recorded")
        tracking.print_run_location(run, cfg.mlflow.tracking_uri)
    return result.pr_auc


def result_key(cfg: Config, data: Any) -> str:
    """A trial's result depends on this only: the data's bytes, the split, the folds and the forest's settings."""
    parts = {"data": data.sha256, "dataset": dataclasses.asdict(cfg.dataset), "split": dataclasses.asdict(cfg.split),
             "evaluation": dataclasses.asdict(cfg.evaluation), "model": forest_key(cfg.model)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _same_as(twin: Any, log: tracking.RunLogger, link: Any) -> float:
    """A trial whose forests an earlier trial already grew and scored: its result, not a refit (minutes each)."""
    from hydra_plugins.optuna_mlflow_sweeper._trial import TWIN_ATTR  # the run's tag is named as the trial's attr

    run_id = twin.user_attrs.get("mlflow_run_id", "")
    log(mlflow.set_tags, {TWIN_ATTR: str(twin.number), "same_forest_as_run": run_id})
    kept = {k: twin.user_attrs[k] for k in ("val_pr_auc_std", "val_roc_auc") if isinstance(
        twin.user_attrs.get(k), (int, float))}
    log(mlflow.log_metrics, {"val_pr_auc": twin.value, **kept, "fit_seconds": 0.0})
    link.record(**kept, fit_seconds=0.0)
    if log.lost is not None:
        link.record(mlflow_lost=log.lost)
    return float(twin.value)


def one_line(exc: BaseException) -> str:
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"unknown {group} '{name}': choose one of {', '.join(exc.options)} (e.g. {group}={exc.options[0]})"
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if cause is not None and not isinstance(exc, UserError):
        text += " - " + " ".join(str(cause).split("\n")[0].split())
    return text


def cli(entry: Callable[[], Any] | None = None) -> None:
    """Expected errors (bad config, bad data, unreachable stores) end in one line and exit code 2."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach this handler instead of Hydra's printer
    try:
        (entry or main)()
    except (UserError, HydraException, OmegaConfBaseException) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
