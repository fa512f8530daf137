"""The sweep's final stage: refit the best trial on the whole training split, test it once on the held-out split,
log the model (signature, input example) and register it through the gate (src.lifecycle.gate).

Only the sweeper launches this job (``sweep.stage=final``), once per study and best trial.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from hydra_plugins.optuna_mlflow_sweeper.job import redact
from src.config import Config
from src.data.loading import load
from src.data.schema import Dataset
from src.data.split import Split, split
from src.errors import one_line
from src.jobs import tracking
from src.lifecycle import gate
from src.model.evaluation import fit_and_test
from src.model.forest import build_model
from src.model.plots import plots

MODEL_NAME_IN_RUN = "fraud_model"


def run(cfg: Config, raw_cfg: DictConfig) -> dict[str, Any]:
    """Refit, test once, log, register and gate the model; returns the test score and the registry's answer."""
    data = load(cfg.dataset)
    parts = split(data, cfg.split, cfg.evaluation)
    experiment_id = tracking.connect(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    if cfg.registry.enabled:
        gate.check_registry(client, cfg.registry.model_name)
    returned: dict[str, Any] = {}
    with tracking.tracked_run(cfg, experiment_id, "best_model_packaged", tracking.RunLogger(
            cfg.mlflow.tracking_uri)) as active:
        if active is None:
            raise tracking.TrackingUnavailable(f"the tracking server at {redact(cfg.mlflow.tracking_uri)} "
                                               f"does not answer: nothing was packaged")
        mlflow.log_params(tracking.run_params(cfg, data))
        mlflow.set_tags(tracking.run_tags(cfg, data, "model_packaging"))
        tracking.log_dataset(data, context="training")
        mlflow.log_dict(tracking.loggable_config(raw_cfg), "config/config.yaml")
        fitted, test = fit_and_test(build_model(cfg.model), data, parts, cfg.evaluation.bootstrap_samples,
                                    seed=cfg.split.seed)
        returned.update(test_pr_auc=test.pr_auc, test_pr_auc_ci_low=test.pr_auc_ci_low,
                        test_pr_auc_ci_high=test.pr_auc_ci_high, test_roc_auc=test.roc_auc)
        mlflow.log_metrics(tracking.shown_metrics({**returned, "fit_seconds": test.fit_seconds}))
        figures = plots(data.y[parts.test], test.proba, cfg.evaluation.threshold, "held-out test split")
        tracking.log_figures(figures, folder="test_plots")
        print(f"test_pr_auc = {test.pr_auc:.4f} (95% bootstrap interval {test.pr_auc_ci_low:.4f} to "
              f"{test.pr_auc_ci_high:.4f}), test_roc_auc = {test.roc_auc:.4f}, on {len(parts.test)} held-out "
              f"rows with {int(data.y[parts.test].sum())} frauds")  # a result: stdout
        if cfg.registry.enabled:
            returned.update(_register_and_gate(client, cfg, data, parts, fitted, test))
    return returned


def _register_and_gate(client: MlflowClient, cfg: Config, data: Dataset, parts: Split, fitted: Any,
                       test: Any) -> dict[str, Any]:
    """Register the model with its lineage and test score, run the gate, move the aliases. An interrupted
    packaging of the same trial is completed, not registered twice; one whose gate was undecided is decided now."""
    name, lineage = cfg.registry.model_name, gate.Lineage.of(cfg, data)
    existing = _registered_for_this_trial(client, cfg)
    if existing is not None and existing.tags.get("decision") != gate.UNDECIDED:
        version, promoted = _complete_aliases(client, name, existing)
        mlflow.set_tag("registration", "reused the version an interrupted packaging run registered")
        outcome = gate.PROMOTED if promoted else gate.KEPT
    else:
        version = str(existing.version) if existing is not None else None
        decision = gate.decide(client, cfg, lineage, data.y[parts.test], test.proba, data.X[parts.test], version)
        if version is None:
            info = _log_model(fitted, data, parts)
            version = _register(client, name, info.model_uri, {
                **lineage.tags(), "test_pr_auc": f"{test.pr_auc:.4f}",
                "test_pr_auc_ci": f"[{test.pr_auc_ci_low:.4f}, {test.pr_auc_ci_high:.4f}]", **_trial_tags(cfg),
                **gate.decision_tags(decision)})
        gate.apply(client, name, version, decision)
        where = {gate.PROMOTED: "champion", gate.KEPT: "challenger (champion unchanged)",
                 gate.UNDECIDED: "challenger, undecided"}[decision.decision]
        print(f"registered {name} version {version} as {where}: {decision.reason}")  # the decision: stdout
        outcome = decision.decision
    registered = {"registered_model_name": name, "registered_model_version": version, "promotion_decision": outcome}
    mlflow.set_tags(registered)
    if outcome == gate.UNDECIDED:
        raise gate.RegistryUnavailable(gate.later_hint(name, version))
    # what the sweeper shows on the parent run: a link to the version (the plugin names no field of this app)
    return {"promotion_decision": outcome,
            "links": {f"registered {name} version {version}": f"#/models/{name}/versions/{version}"}}


def _registered_for_this_trial(client: MlflowClient, cfg: Config) -> Any:
    """The version already registered for this study's trial, if a packaging job died after registering it."""
    if not cfg.sweep.study_name or cfg.sweep.trial_number is None:
        return None
    query = (f"name = '{cfg.registry.model_name}' and tags.`optuna.study_name` = '{cfg.sweep.study_name}' "
             f"and tags.`optuna.trial_number` = '{cfg.sweep.trial_number}'")
    try:
        found = client.search_model_versions(query)
    except MlflowException:
        return None
    return min(found, key=lambda v: int(v.version)) if found else None


def _complete_aliases(client: MlflowClient, name: str, mv: Any) -> tuple[str, bool]:
    """Finish what the interrupted job started: the aliases its recorded decision called for."""
    version, promoted = str(mv.version), mv.tags.get("decision") == "promoted"
    newer = [v for v in client.search_model_versions(f"name = '{name}'") if int(v.version) > int(version)]
    if not newer:
        client.set_registered_model_alias(name, gate.CHALLENGER, version)
        champion = gate.champion_version(client, name)
        compared = mv.tags.get("compared_with_version") or None
        current = str(champion.version) if champion is not None else None
        if promoted and current != version and current == compared:
            client.set_registered_model_alias(name, gate.CHAMPION, version)
    print(f"{name} version {version} was already registered for this trial: reused ({mv.tags.get('decision')})",
          file=sys.stderr)
    return version, promoted


def _log_model(fitted: Any, data: Dataset, parts: Split) -> Any:
    example = gate.features_frame(data.X[_example_rows(data, parts)])
    return mlflow.sklearn.log_model(
        fitted,
        name=MODEL_NAME_IN_RUN,
        serialization_format="skops",
        skops_trusted_types=gate.TRUSTED_TYPES,
        signature=mlflow.models.infer_signature(example, fitted.predict_proba(example)),
        input_example=example,
        pyfunc_predict_fn="predict_proba",
        pip_requirements=_requirements(),
    )


def _trial_tags(cfg: Config) -> dict[str, str]:
    tags = {}
    if cfg.sweep.study_name:
        tags["optuna.study_name"] = cfg.sweep.study_name
    if cfg.sweep.trial_number is not None:
        tags["optuna.trial_number"] = str(cfg.sweep.trial_number)
    return tags


def _register(client: MlflowClient, name: str, model_uri: str, tags: dict[str, str]) -> str:
    """The version, created with its lineage, test score and decision already written."""
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # MLflow's "Successfully registered ..." chatter
            mv = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as exc:
        raise gate.RegistryError(f"registry.model_name={name!r}: {one_line(exc)}") from None
    return str(mv.version)


def _requirements() -> list[str]:
    """Pinned to what trained the model (MLflow's inference would run the model in a subprocess to guess)."""
    from importlib.metadata import version

    return [f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "scikit-learn", "skops", "numpy", "scipy", "pandas")]


def _example_rows(data: Dataset, parts: Split) -> np.ndarray:
    """Five training rows, one of them a fraud, so the example shows both kinds of output."""
    train_y = data.y[parts.train]
    fraud = parts.train[np.flatnonzero(train_y == 1)[:1]]
    legit = parts.train[np.flatnonzero(train_y == 0)[:4]]
    return np.concatenate([legit, fraud])
