"""A trial's job (and a single run): cross-validate one configuration on the training split, as one MLflow run.

What a complete trial computes: average precision per fold (the default objective, ``val_pr_auc``), and money: on
each fold, the net gain at the threshold that maximises the net gain of the *other* folds' out-of-fold predictions
(``val_net_gain``; no fold's score saw its own labels), and the threshold chosen on all of its out-of-fold
predictions (``decision_threshold``: the trial's operating point, which its final stage uses). Under the sweeper
the pruner sees AP after each look and fold (a ranking, cheap before the folds are done); a trial that would grow
the same forests as an earlier COMPLETE trial takes that trial's result (src.jobs.reuse).
Returns the objective and its companions (the sweeper keeps them on the trial).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Any, Optional

import mlflow
import numpy as np
from omegaconf import DictConfig

from hydra_plugins.optuna_mlflow_sweeper.job import TrialLink, check_interrupted
from src.config import Config, EvaluationConfig
from src.data.loading import load
from src.jobs import configured, prepared, reuse, tracking
from src.model.decision import OutOfFold, halves, out_of_fold
from src.model.evaluation import CVResult, cross_validate
from src.model.forest import build_model
from src.model.plots import net_gain_figure, plots


class ObjectiveError(ValueError):
    pass


@dataclass(frozen=True)
class Steps:
    """Optuna steps, the same in every trial of a study. Plain: fold k (from 0) is step k. With a first look at a
    few trees, that look is step 0 and fold k is step k + 1. With row looks, steps count rows in units of the first
    look (looks at 1/9 and 1/3: steps 1 and 3; folds 9, 18, 27), so that successive halving's rungs fall on them."""

    row_looks: tuple[float, ...] = ()
    look_trees: Optional[int] = None

    @classmethod
    def of(cls, evaluation: EvaluationConfig) -> Steps:
        return cls(tuple(evaluation.row_looks), evaluation.first_look_trees)

    def row_look(self, i: int) -> int:
        return round(self.row_looks[i] / self.row_looks[0])

    def fold(self, k: int) -> int:
        if self.row_looks:
            return round((k + 1) / self.row_looks[0])
        return (0 if self.look_trees is None else 1) + k


class TrialJob:
    """One configuration, cross-validated and recorded: owns its steps, what it logs and what it reports (to the
    pruner in a sweep, to the person watching in a single run)."""

    def __init__(self, cfg: Config, raw_cfg: DictConfig) -> None:
        self.cfg, self.raw_cfg = cfg, raw_cfg
        self.data = load(cfg.dataset)
        self.parts = prepared.split_of(cfg, self.data)
        self.link = TrialLink(cfg.sweep) if cfg.sweep.in_sweep else None
        self.log = tracking.RunLogger(cfg.mlflow.tracking_uri)
        self.steps = Steps.of(cfg.evaluation) if self.link is not None else Steps()
        self.started = time.perf_counter()

    # -- the run ------------------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        experiment_id = self._connect()
        name = f"trial-{self.cfg.sweep.trial_number:03d}" if self.cfg.sweep.trial_number is not None else None
        with tracking.tracked_run(self.cfg, experiment_id, name, self.log) as active:
            self._record_inputs()
            twin = reuse.earlier_twin(self.link, reuse.result_key(self.cfg, self.data)) if self.link else None
            if twin is not None:
                assert self.link is not None
                return reuse.same_as(twin, self.link, self.log)
            result = self._cross_validate()
            money = self._money(result)
            metrics = {**self._metrics(result, money), **self._vs_configured(result)}
            self._record_result(result, money, metrics)
        if self.cfg.sweep.trial_number is None:
            self._report_single_run(active, result, money)
        return {**metrics, "decision_threshold": money.threshold, **({"mlflow_lost": self.log.lost}
                                                                       if self.log.lost else {})}

    def _connect(self) -> Optional[str]:
        try:
            experiment_id = tracking.connect(self.cfg.mlflow.tracking_uri, self.cfg.mlflow.experiment_name)
            if self.link is None:  # a single run: end the runs earlier single runs could not end themselves
                tracking.end_abandoned_single_runs(experiment_id)
            return experiment_id
        except tracking.TrackingError as exc:
            if self.link is None or not self.cfg.sweep.run_id:
                raise  # a single run has nowhere else to keep its result: stop before the work
            self.log.lost = str(exc)  # a trial still computes its objective; Optuna keeps it
            return None

    def _record_inputs(self) -> None:
        # params and tags in one write (one store transaction), as the metrics below
        self.log(tracking.batch, params=tracking.run_params(self.cfg, self.data),
                 tags=tracking.run_tags(self.cfg, self.data, "hyperparameter_tuning"))
        self.log(tracking.log_dataset, self.data, context="training")
        self.log(mlflow.log_dict, tracking.loggable_config(self.raw_cfg), "config/config.yaml")

    def _cross_validate(self) -> CVResult:
        steps = self.steps
        result = cross_validate(
            build_model(self.cfg.model), self.data, self.parts, on_fold=self.on_fold,
            look_trees=steps.look_trees, on_look=self.on_look if steps.look_trees is not None else None,
            row_looks=steps.row_looks, on_rows=self.on_rows if steps.row_looks else None, seed=self.cfg.split.seed,
            X=prepared.inputs_of(self.cfg, self.data), scale_looks=self.cfg.evaluation.scale_looks)
        if not math.isfinite(result.pr_auc):
            raise ObjectiveError(f"the objective is {result.pr_auc} (fold APs {result.fold_pr_auc})")
        return result

    # -- the steps, as they happen ------------------------------------------------------------------------------
    def on_rows(self, i: int, rows: int, ap: float, seconds: float) -> None:
        check_interrupted()
        step = self.steps.row_look(i)
        self.log(tracking.batch, metrics=[("val_pr_auc_row_look", ap, step), ("fit_seconds", seconds, step)])
        assert self.link is not None
        self.link.report(step, ap, f"fold 1 on {rows:,} rows")

    def on_look(self, trees: int, ap: float, seconds: float) -> None:
        self.log(tracking.batch, metrics=[("val_pr_auc_first_look", ap, 0), ("fit_seconds", seconds, 0)])
        assert self.link is not None
        self.link.report(0, ap, f"the first {trees} trees of fold 1")

    def on_fold(self, fold: int, mean_so_far: float, seconds: float) -> None:
        check_interrupted()  # a Ctrl-C or SIGTERM that a library's callback swallowed stops the run here
        step = self.steps.fold(fold)
        # fit_seconds so far too (at the trial's Optuna step: MLflow shows a metric's value at its highest step)
        self.log(tracking.batch, metrics=[("val_pr_auc_running_mean", mean_so_far, step),
                                          ("fit_seconds", seconds, step)])
        n_folds = len(self.parts.folds)
        if self.link is not None:  # (after the last fold the trial is complete: nothing left to save by pruning)
            self.link.report(step, mean_so_far, f"fold {fold + 1}", decide=fold + 1 < n_folds)
        elif self.cfg.sweep.trial_number is None:  # a single run: show that it is moving
            print(f"fold {fold + 1}/{n_folds} done, mean AP so far {mean_so_far:.4f} "
                  f"({time.perf_counter() - self.started:.0f} s)", file=sys.stderr, flush=True)

    # -- what the trial found -----------------------------------------------------------------------------------
    def _money(self, result: CVResult) -> OutOfFold:
        y = self.data.y[result.oof_index]
        fold_of = result.oof_fold if len(self.parts.folds) > 1 else halves(y, self.cfg.split.seed)
        return out_of_fold(self.cfg.decision, y, result.oof_proba, prepared.amounts(self.data)[result.oof_index],
                           fold_of)

    def _vs_configured(self, result: CVResult) -> dict[str, float]:
        """Paired evidence against the configured trial (src.jobs.configured): that trial keeps its out-of-fold
        predictions for the others."""
        if self.link is None:
            return {}
        if self.link.is_start:
            self.log(configured.save, result)
            return dict(configured.ITSELF)
        found, note = configured.for_trial(self.link, self.cfg, self.data.y, prepared.amounts(self.data), result)
        if note:
            self.link.note(note)
        return found

    @staticmethod
    def _metrics(result: CVResult, money: OutOfFold) -> dict[str, float]:
        metrics = {"val_pr_auc": result.pr_auc, "val_roc_auc": result.roc_auc, "fit_seconds": result.fit_seconds,
                   "val_net_gain": money.cross.mean}
        if math.isfinite(result.pr_auc_std):
            metrics["val_pr_auc_std"] = result.pr_auc_std
            # the mean's standard error: the uncertainty the sweeper's stopping rule compares a gain with
            metrics["val_pr_auc_sem"] = result.pr_auc_std / math.sqrt(len(result.fold_pr_auc))
        if math.isfinite(money.cross.std):
            metrics["val_net_gain_std"] = money.cross.std
            metrics["val_net_gain_sem"] = money.cross.std / math.sqrt(len(money.cross.fold_gains))
        return metrics

    def _record_result(self, result: CVResult, money: OutOfFold, metrics: dict[str, float]) -> None:
        if self.link is not None:  # the out-of-fold curve stays with the trial: its final stage plots it
            self.link.trial.set_user_attr(reuse.CURVE_ATTR, [round(float(g), 2) for g in money.grid_gains])
        # fit_seconds is already there: logged after each fold (cumulative; its last step is the total)
        self.log(tracking.batch, params={"decision_threshold": f"{money.threshold:.6g}"}, metrics=[
            *((k, v, 0) for k, v in metrics.items() if k != "fit_seconds"),
            *(("val_pr_auc_fold", v, fold) for fold, v in enumerate(result.fold_pr_auc)),
            *(("val_net_gain_fold", v, fold) for fold, v in enumerate(money.cross.fold_gains))])
        if self.cfg.mlflow.log_plots and self.log.lost is None:
            y_oof = self.data.y[result.oof_index]
            title = f"out-of-fold, {len(self.parts.folds)} fold(s)"
            figures = plots(y_oof, result.oof_proba, money.threshold, title)
            figures["net_gain.png"] = net_gain_figure(title, money.threshold, oof=(money.grid, money.grid_gains))
            self.log(tracking.log_figures, figures)

    def _report_single_run(self, active: Any, result: CVResult, money: OutOfFold) -> None:
        chosen = "pinned by decision.threshold" if money.pinned else "chosen on the out-of-fold predictions"
        print(f"val_pr_auc = {result.pr_auc:.4f} ± {result.pr_auc_std:.4f} (mean ± std over "
              f"{len(result.fold_pr_auc)} folds of the training split), val_roc_auc = {result.roc_auc:.4f}, "
              f"fit {result.fit_seconds:.1f} s")  # the result: stdout
        print(f"val_net_gain = {money.cross.mean:,.0f} ± {_std(money.cross.std)} per fold (each fold at the "
              f"threshold of the other folds; cost model {self.cfg.decision.name}), decision_threshold = "
              f"{money.threshold:.4f} ({chosen})")
        if self.log.lost is not None:
            raise tracking.TrackingUnavailable(f"{self.log.lost}: this run's result (val_pr_auc {result.pr_auc:.4f})"
                                               f" was not recorded")
        tracking.print_run_location(active, self.cfg.mlflow.tracking_uri)


def _std(value: float) -> str:
    return f"{value:,.0f}" if np.isfinite(value) else "-"


def run(cfg: Config, raw_cfg: DictConfig) -> dict[str, Any]:
    """Cross-validate one configuration on the training split and record it as one MLflow run."""
    return TrialJob(cfg, raw_cfg).run()
