"""A trial's job (and a single run): cross-validate one configuration on the training split, as one MLflow run.

Under the sweeper it reports the running mean after each fold to the pruner, and a trial that would grow the same
forests as an earlier COMPLETE trial of the study takes that trial's result instead of refitting for minutes.
Returns the objective and its companions (the sweeper keeps them on the trial).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import time
from typing import Any, Optional

import mlflow
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.optuna_mlflow_sweeper.job import RUN_ATTR, TrialLink, check_interrupted
from src.config import Config
from src.data.loading import load
from src.data.split import Split, split
from src.jobs import tracking
from src.model.evaluation import cross_validate
from src.model.forest import build_model, forest_key
from src.model.plots import plots

FOREST_ATTR = "forest_key"  # trial user attribute: what decides the trial's result
TWIN_ATTR = "same_forest_as_trial"  # trial user attribute and run tag: the earlier trial whose result was taken


class ObjectiveError(ValueError):
    pass


def result_key(cfg: Config, data: Any) -> str:
    """A trial's result depends on this only: the data's bytes, the split, the folds and the forest's settings."""
    parts = {"data": data.sha256, "dataset": dataclasses.asdict(cfg.dataset), "split": dataclasses.asdict(cfg.split),
             "evaluation": dataclasses.asdict(cfg.evaluation), "model": forest_key(cfg.model)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def earlier_twin(link: TrialLink, key: str) -> Optional[FrozenTrial]:
    """A COMPLETE trial of the study that grew the same forests on the same folds: refitting it would give the same
    value again (TPE proposes the best region repeatedly, and min_samples_split up to 2 * min_samples_leaf grows
    the same trees)."""
    trial = link.trial
    trial.set_user_attr(FOREST_ATTR, key)
    for earlier in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if earlier.user_attrs.get(FOREST_ATTR) == key and earlier.number != trial.number:
            trial.set_user_attr(TWIN_ATTR, earlier.number)
            link.note(f"the same forests as trial {earlier.number}: its result, not refitted")
            return earlier
    return None


_SPLITS: dict[str, Split] = {}


def _split(cfg: Config, data: Any) -> Split:
    """The split and folds, once per process and data/split/fold settings: a sweep's trials share them (~60 ms on
    the real data, a large share of a trial pruned at its first row look)."""
    key = json.dumps([data.sha256, dataclasses.asdict(cfg.split), cfg.evaluation.cv_folds,
                      cfg.evaluation.validation_size], sort_keys=True, default=str)
    if key not in _SPLITS:
        _SPLITS.clear()
        _SPLITS[key] = split(data, cfg.split, cfg.evaluation)
    return _SPLITS[key]


def run(cfg: Config, raw_cfg: DictConfig) -> dict[str, Any]:
    """Cross-validate one configuration on the training split and record it as one MLflow run."""
    data = load(cfg.dataset)
    parts = _split(cfg, data)
    link = TrialLink(cfg.sweep) if cfg.sweep.in_sweep else None
    log = tracking.RunLogger(cfg.mlflow.tracking_uri)
    experiment_id = None
    try:
        experiment_id = tracking.connect(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name)
    except tracking.TrackingError as exc:
        if link is None or not cfg.sweep.run_id:
            raise  # a single run has nowhere else to keep its result: stop before the work
        log.lost = str(exc)  # a trial still computes its objective; Optuna keeps it

    started = time.perf_counter()
    # Optuna steps, the same in every trial of a study: fold k (from 0) is step k; with a first look at a few trees,
    # that look is step 0 and fold k is step k + 1; with row looks, steps count rows (below).
    look = cfg.evaluation.first_look_trees if link is not None else None
    first_fold_step = 0 if look is None else 1
    # With row looks, a step counts rows in units of the first look (the row budget; see EvaluationConfig).
    row_looks = list(cfg.evaluation.row_looks) if link is not None else []

    def step_of(fold: int) -> int:
        return round((fold + 1) / row_looks[0]) if row_looks else first_fold_step + fold

    def on_rows(i: int, rows: int, ap: float, seconds: float) -> None:
        check_interrupted()
        step = round(row_looks[i] / row_looks[0])
        log(tracking.batch, metrics=[("val_pr_auc_row_look", ap, step), ("fit_seconds", seconds, step)])
        assert link is not None
        link.report(step, ap, f"fold 1 on {rows:,} rows")

    def on_look(trees: int, ap: float, seconds: float) -> None:
        log(tracking.batch, metrics=[("val_pr_auc_first_look", ap, 0), ("fit_seconds", seconds, 0)])
        assert link is not None
        link.report(0, ap, f"the first {trees} trees of fold 1")

    def on_fold(fold: int, mean_so_far: float, seconds: float) -> None:
        check_interrupted()  # a Ctrl-C or SIGTERM that a library's callback swallowed stops the run here
        # fit_seconds so far too: a pruned trial's run still says how long it fitted
        # (at the trial's Optuna step: MLflow shows a metric's value at its highest step as the run's value)
        log(tracking.batch, metrics=[("val_pr_auc_running_mean", mean_so_far, step_of(fold)),
                                     ("fit_seconds", seconds, step_of(fold))])
        if link is not None:  # (after the last fold the trial is complete: nothing left to save by pruning it)
            link.report(step_of(fold), mean_so_far, f"fold {fold + 1}", decide=fold + 1 < len(parts.folds))
        elif cfg.sweep.trial_number is None:  # a single run: show that it is moving
            print(f"fold {fold + 1}/{len(parts.folds)} done, mean AP so far {mean_so_far:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    run_name = f"trial-{cfg.sweep.trial_number:03d}" if cfg.sweep.trial_number is not None else None
    with tracking.tracked_run(cfg, experiment_id, run_name, log) as active:
        # params and tags in one write (one store transaction), as the metrics below
        log(tracking.batch, params=tracking.run_params(cfg, data),
            tags=tracking.run_tags(cfg, data, "hyperparameter_tuning"))
        log(tracking.log_dataset, data, context="training")
        log(mlflow.log_dict, tracking.loggable_config(raw_cfg), "config/config.yaml")
        twin = earlier_twin(link, result_key(cfg, data)) if link is not None else None
        if twin is not None:
            return _same_as(twin, log)
        result = cross_validate(build_model(cfg.model), data, parts, on_fold=on_fold, look_trees=look,
                                on_look=on_look, row_looks=row_looks, on_rows=on_rows if row_looks else None,
                                seed=cfg.split.seed)
        if not math.isfinite(result.pr_auc):
            raise ObjectiveError(f"the objective is {result.pr_auc} (fold APs {result.fold_pr_auc})")
        metrics = {"val_pr_auc": result.pr_auc, "val_roc_auc": result.roc_auc, "fit_seconds": result.fit_seconds}
        if math.isfinite(result.pr_auc_std):
            metrics["val_pr_auc_std"] = result.pr_auc_std
            # the mean's standard error: the uncertainty the sweeper's stopping rule compares a gain with
            metrics["val_pr_auc_sem"] = result.pr_auc_std / math.sqrt(len(result.fold_pr_auc))
        # fit_seconds is already there: logged after each fold (cumulative; its last step is the total)
        log(tracking.batch, metrics=[*((k, v, 0) for k, v in metrics.items() if k != "fit_seconds"),
                                     *(("val_pr_auc_fold", v, fold) for fold, v in enumerate(result.fold_pr_auc))])
        if cfg.mlflow.log_plots and log.lost is None:
            y_oof = data.y[result.oof_index]
            title = f"out-of-fold, {len(parts.folds)} fold(s)"
            log(tracking.log_figures, plots(y_oof, result.oof_proba, cfg.evaluation.threshold, title))
    if cfg.sweep.trial_number is None:
        print(f"val_pr_auc = {result.pr_auc:.4f} ± {result.pr_auc_std:.4f} (mean ± std over "
              f"{len(result.fold_pr_auc)} folds of the training split), val_roc_auc = {result.roc_auc:.4f}, "
              f"fit {result.fit_seconds:.1f} s")  # the result: stdout
        if log.lost is not None:
            raise tracking.TrackingUnavailable(f"{log.lost}: this run's result (val_pr_auc {result.pr_auc:.4f}) was "
                                               f"not recorded")
        tracking.print_run_location(active, cfg.mlflow.tracking_uri)
    return {**metrics, **({"mlflow_lost": log.lost} if log.lost else {})}


def _same_as(twin: FrozenTrial, log: tracking.RunLogger) -> dict[str, Any]:
    """A trial whose forests an earlier trial already grew and scored: its result, not a refit (minutes each)."""
    kept = {k: twin.user_attrs[k] for k in ("val_pr_auc_std", "val_pr_auc_sem", "val_roc_auc") if isinstance(
        twin.user_attrs.get(k), (int, float))}
    metrics = {"val_pr_auc": float(twin.value), **kept, "fit_seconds": 0.0}
    log(tracking.batch, tags={TWIN_ATTR: str(twin.number), "same_forest_as_run": twin.user_attrs.get(
        RUN_ATTR, "")}, metrics=[(k, v, 0) for k, v in metrics.items()])
    return {**metrics, **({"mlflow_lost": log.lost} if log.lost else {})}
