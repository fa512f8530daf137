"""The sweep's final stage: refit the best trial on the whole training split, test it once on the held-out split at
the trial's own threshold, log the model and register it through the gate (src.lifecycle).

Only the sweeper launches this job (``sweep.stage=final``), once per study and best trial. Invariants:
- it packages exactly what its trial scored: the data, the split, the folds, the features, the cost model and the
  forest must give the trial's recorded result key (``hydra.sweeper.final.overrides`` cannot change them);
- the operating point is the trial's (chosen on its out-of-fold predictions), never one chosen on test rows;
- every look at the test split is counted in the lineage's ledger before a score exists, and a look that could not
  be counted or registered is refused: with ``registry.enabled=false`` there is no final stage.
"""

from __future__ import annotations

import math
from typing import Any

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from hydra_plugins.optuna_mlflow_sweeper.job import recorded_trial, redact
from src.config import Config
from src.data.loading import load
from src.data.schema import Dataset
from src.data.split import Split
from src.errors import UserError
from src.jobs import prepared, reuse, tracking
from src.lifecycle import gate, package, registration
from src.lifecycle.ledger import Ledger, RegistryUnavailable, Rule
from src.lifecycle.lineage import Lineage
from src.model.decision import GRID, Operating, Payoffs, gain_curve, gain_interval
from src.model.evaluation import TestResult, fit_and_test
from src.model.forest import build_model
from src.model.plots import net_gain_figure, plots


class FinalStageRefused(UserError):
    """The final stage would not test what its trial scored, or would look at the test split uncounted."""


def run(cfg: Config, raw_cfg: DictConfig) -> dict[str, Any]:
    """Refit, test once, log, register and gate the model; returns the test scores and a link to the version."""
    if not cfg.registry.enabled:
        raise FinalStageRefused("the final stage tests on the held-out split, and with registry.enabled=false that "
                                "look would be neither counted nor registered: set registry.enabled=true, or "
                                "hydra.sweeper.final.enabled=false")
    data = load(cfg.dataset)
    parts = prepared.split_of(cfg, data)
    trial = recorded_trial(cfg.sweep)
    threshold = _trial_operating_point(cfg, data, trial)
    experiment_id = tracking.connect(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    name = cfg.registry.model_name
    gate.check_registry(client, name)
    lineage = Lineage.of(cfg, data, parts)
    existing = registration.for_trial(client, cfg)  # before any look: a failing registry stops here
    ledger = Ledger(client, cfg.mlflow.tracking_uri, lineage)
    rule = ledger.open(Rule.of(cfg.registry))  # the lineage's rule; other settings are refused here
    look = ledger.record_look(study=str(cfg.sweep.study_name), trial=int(cfg.sweep.trial_number or 0),
                              model_name=name)
    log = tracking.RunLogger(cfg.mlflow.tracking_uri)
    with tracking.tracked_run(cfg, experiment_id, "best_model_packaged", log) as active:
        if active is None:
            raise tracking.TrackingUnavailable(f"the tracking server at {redact(cfg.mlflow.tracking_uri)} "
                                               f"does not answer: nothing was packaged")
        mlflow.log_params({**tracking.run_params(cfg, data), "decision_threshold": f"{threshold:.6g}"})
        mlflow.set_tags(tracking.run_tags(cfg, data, "model_packaging"))
        tracking.log_dataset(data, context="training")
        mlflow.log_dict(tracking.loggable_config(raw_cfg), "config/config.yaml")
        forest, test = fit_and_test(build_model(cfg.model), data, parts, cfg.evaluation.bootstrap_samples,
                                    seed=cfg.split.seed, X=prepared.inputs_of(cfg, data), names=prepared.names_of(cfg))
        money = TestMoney.of(cfg, data, parts, test, threshold)
        returned = {"test_pr_auc": test.pr_auc, "test_pr_auc_ci_low": test.pr_auc_ci_low,
                    "test_pr_auc_ci_high": test.pr_auc_ci_high, "test_roc_auc": test.roc_auc, **money.metrics()}
        mlflow.log_metrics(tracking.shown_metrics({**returned, "fit_seconds": test.fit_seconds}))
        if cfg.mlflow.log_plots:
            tracking.log_figures(_figures(cfg, data, parts, test, money, trial), folder="test_plots")
        _print(cfg, data, parts, test, money)
        uses = ledger.position(look)
        rows = gate.TestRows.of(data.X[parts.test], data.y[parts.test], prepared.amounts(data)[parts.test],
                                cfg.decision)
        version, verdict = registration.register_and_decide(
            client, cfg, lineage=lineage, rule=rule, uses=uses, rows=rows,
            challenger=gate.Scored(proba=test.proba, threshold=threshold), existing=existing,
            log_model=lambda: package.log_model(forest, cfg, threshold, data.X[_example_rows(data, parts)]),
            tags=_version_tags(cfg, lineage, test, money))
        mlflow.set_tags({"registered_model_name": name, "registered_model_version": version,
                         "promotion_decision": verdict.value})
    if verdict == gate.UNDECIDED:
        raise RegistryUnavailable(gate.later_hint(name, version))
    # what the sweeper shows on the parent run: the test scores and a link to the version (it names no app field)
    return {**returned, "promotion_decision": verdict.value,
            "links": {f"registered {name} version {version}": f"#/models/{name}/versions/{version}"}}


def _trial_operating_point(cfg: Config, data: Dataset, trial: Any) -> float:
    """The trial's threshold, after checking that this job scores what the trial scored."""
    key = reuse.result_key(cfg, data)
    recorded = trial.user_attrs.get(reuse.FOREST_ATTR)
    if recorded != key:
        raise FinalStageRefused(f"the final stage's configuration differs from trial {trial.number}'s (result key "
                                f"{key} vs {recorded}): it packages exactly what its trial scored; drop "
                                f"hydra.sweeper.final.overrides that change the data, split, folds, features, cost "
                                f"model or forest")
    threshold = trial.user_attrs.get("decision_threshold")
    if not isinstance(threshold, (int, float)) or not math.isfinite(threshold):
        raise FinalStageRefused(f"trial {trial.number} records no decision_threshold: rerun the study (it was scored "
                                f"before thresholds were chosen)")
    return float(threshold)


class TestMoney:
    """The test split in money, at the trial's threshold, beside flagging nothing and flagging at
    evaluation.threshold (0.5)."""

    def __init__(self, chosen: Operating, ci: tuple[float, float], nothing: float, fixed: Operating,
                 curve: np.ndarray) -> None:
        self.chosen, self.ci, self.nothing, self.fixed, self.curve = chosen, ci, nothing, fixed, curve

    @classmethod
    def of(cls, cfg: Config, data: Dataset, parts: Split, test: TestResult, threshold: float) -> TestMoney:
        y = data.y[parts.test]
        payoffs = Payoffs.of(cfg.decision, y, prepared.amounts(data)[parts.test])
        chosen = Operating.of(payoffs, y, test.proba, threshold)
        ci = gain_interval(payoffs.at(test.proba, threshold), cfg.evaluation.bootstrap_samples, seed=cfg.split.seed)
        return cls(chosen, ci, float(payoffs.passed.sum()),
                   Operating.of(payoffs, y, test.proba, cfg.evaluation.threshold),
                   gain_curve(payoffs, test.proba).at(GRID))

    def metrics(self) -> dict[str, float]:
        return {"test_net_gain": self.chosen.net_gain, "test_net_gain_ci_low": self.ci[0],
                "test_net_gain_ci_high": self.ci[1], "test_net_gain_flag_nothing": self.nothing,
                "test_net_gain_fixed_threshold": self.fixed.net_gain, "test_recall": self.chosen.recall,
                "test_precision": self.chosen.precision, "test_alerts_per_1000": self.chosen.alerts_per_1000}


def _print(cfg: Config, data: Dataset, parts: Split, test: TestResult, money: TestMoney) -> None:
    """The results: stdout."""
    n, frauds = len(parts.test), int(data.y[parts.test].sum())
    c = money.chosen
    print(f"test_pr_auc = {test.pr_auc:.4f} (95% bootstrap interval {test.pr_auc_ci_low:.4f} to "
          f"{test.pr_auc_ci_high:.4f}), test_roc_auc = {test.roc_auc:.4f}, on {n} held-out rows with {frauds} frauds")
    print(f"test_net_gain = {c.net_gain:,.0f} (95% bootstrap interval {money.ci[0]:,.0f} to {money.ci[1]:,.0f}) at "
          f"the trial's threshold {c.threshold:.4f} (cost model {cfg.decision.name}): recall {c.recall:.3f}, "
          f"precision {c.precision:.3f}, {c.alerts_per_1000:.2f} alerts per 1,000 transactions; flagging nothing "
          f"{money.nothing:,.0f}, flagging at {cfg.evaluation.threshold:g} {money.fixed.net_gain:,.0f}")


def _figures(cfg: Config, data: Dataset, parts: Split, test: TestResult, money: TestMoney, trial: Any) -> dict:
    y = data.y[parts.test]
    figures = plots(y, test.proba, money.chosen.threshold, "held-out test split")
    oof = trial.user_attrs.get(reuse.CURVE_ATTR)
    oof_curve = (GRID, np.asarray(oof, dtype=float)) if isinstance(oof, list) and len(oof) == len(GRID) else None
    figures["net_gain.png"] = net_gain_figure(f"trial {trial.number}: out-of-fold and held-out test",
                                              money.chosen.threshold, oof=oof_curve, test=(GRID, money.curve))
    return figures


def _version_tags(cfg: Config, lineage: Lineage, test: TestResult, money: TestMoney) -> dict[str, str]:
    tags = {**lineage.tags(), "test_pr_auc": f"{test.pr_auc:.4f}", "test_pr_auc_exact": repr(float(test.pr_auc)),
            "test_pr_auc_ci": f"[{test.pr_auc_ci_low:.4f}, {test.pr_auc_ci_high:.4f}]",
            "test_net_gain": f"{money.chosen.net_gain:.2f}",
            "test_net_gain_ci": f"[{money.ci[0]:.2f}, {money.ci[1]:.2f}]",
            "decision_threshold": f"{money.chosen.threshold:.6g}", "cost_model": cfg.decision.name,
            "cost_model.values": cfg.decision.summary(), "features.time": cfg.features.time}
    if cfg.sweep.study_name:
        tags["optuna.study_name"] = cfg.sweep.study_name
    if cfg.sweep.trial_number is not None:
        tags["optuna.trial_number"] = str(cfg.sweep.trial_number)
    return tags


def _example_rows(data: Dataset, parts: Split) -> np.ndarray:
    """Five training rows, one of them a fraud, so the example shows both kinds of output."""
    train_y = data.y[parts.train]
    fraud = parts.train[np.flatnonzero(train_y == 1)[:1]]
    legit = parts.train[np.flatnonzero(train_y == 0)[:4]]
    return np.concatenate([legit, fraud])
