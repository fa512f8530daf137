"""Packaging the best model, registering it, and the champion/challenger gate.

``python -m src.registry list|promote|rollback`` lets a person inspect and override the gate; every decision,
automatic or manual, is written on the model version (tags and description).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from src import tracking
from src.config import Config, MlflowConfig, RegistryConfig, UserError
from src.data import Dataset, Split, load, split
from src.evaluation import fit_and_test, fraud_proba, paired_bootstrap, plots
from src.model import build_model
from src.synthetic import FEATURES

MODEL_NAME_IN_RUN = "fraud_model"
TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]  # what skops must be allowed to load for a RandomForest
CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryError(UserError):
    pass


@dataclass
class Decision:
    promote: bool
    reason: str
    challenger_ap: float
    champion_ap: Optional[float] = None
    champion_version: Optional[str] = None
    diff_lower: Optional[float] = None


def features_frame(X: np.ndarray) -> pd.DataFrame:
    """The model's input: the 30 named columns as doubles (what the signature promises)."""
    return pd.DataFrame(np.asarray(X, dtype=np.float64), columns=FEATURES)


def package_best(cfg: Config, raw_cfg: DictConfig) -> float:
    """Refit on the whole training split, test once on the held-out split, log, register and gate the model."""
    data = load(cfg.dataset)
    parts = split(data, cfg.split, cfg.evaluation)
    experiment_id = tracking.connect(cfg.mlflow.tracking_uri, cfg.mlflow.experiment_name)
    client = MlflowClient(cfg.mlflow.tracking_uri)
    if cfg.registry.enabled:
        _check_registry(client, cfg.registry.model_name)
    with tracking.tracked_run(cfg, experiment_id, "best_model_packaged", tracking.RunLogger(
            cfg.mlflow.tracking_uri)) as run:
        if run is None:
            raise tracking.TrackingUnavailable(f"the tracking server at {tracking.redact(cfg.mlflow.tracking_uri)} "
                                               f"does not answer: nothing was packaged")
        mlflow.log_params(tracking.run_params(cfg, data))
        mlflow.set_tags(tracking.run_tags(cfg, data, "model_packaging"))
        tracking.log_dataset(data, context="training")
        mlflow.log_dict(tracking.loggable_config(raw_cfg), "config/config.yaml")
        fitted, test = fit_and_test(build_model(cfg.model), data, parts, cfg.evaluation.bootstrap_samples,
                                    seed=cfg.split.seed)
        mlflow.log_metrics({
            "test_pr_auc": test.pr_auc,
            "test_pr_auc_ci_low": test.pr_auc_ci_low,
            "test_pr_auc_ci_high": test.pr_auc_ci_high,
            "test_roc_auc": test.roc_auc,
            "fit_seconds": test.fit_seconds,
        })
        figures = plots(data.y[parts.test], test.proba, cfg.evaluation.threshold, "held-out test split")
        tracking.log_figures(figures, folder="test_plots")
        print(f"test_pr_auc = {test.pr_auc:.4f} (95% bootstrap interval {test.pr_auc_ci_low:.4f} to "
              f"{test.pr_auc_ci_high:.4f}), test_roc_auc = {test.roc_auc:.4f}, on {len(parts.test)} held-out "
              f"rows with {int(data.y[parts.test].sum())} frauds", file=sys.stderr)
        existing = _registered_for_this_trial(client, cfg) if cfg.registry.enabled else None
        if existing is not None:  # an interrupted packaging of the same trial got as far as registering
            version, promoted = _complete_aliases(client, cfg.registry.model_name, existing)
            mlflow.set_tags({"registered_model_name": cfg.registry.model_name,
                             "registered_model_version": version,
                             "promotion_decision": "promoted" if promoted else "kept_champion",
                             "registration": "reused the version an interrupted packaging run registered"})
        elif cfg.registry.enabled:
            example = features_frame(data.X[_example_rows(data, parts)])
            info = mlflow.sklearn.log_model(
                fitted,
                name=MODEL_NAME_IN_RUN,
                serialization_format="skops",
                skops_trusted_types=TRUSTED_TYPES,
                signature=mlflow.models.infer_signature(example, fitted.predict_proba(example)),
                input_example=example,
                pyfunc_predict_fn="predict_proba",
                pip_requirements=_requirements(),
            )
            decision = decide(client, cfg, data, parts, test.proba)
            version = register(client, cfg, data, info.model_uri, run.info.run_id, test, decision)
            mlflow.set_tags({"registered_model_name": cfg.registry.model_name,
                             "registered_model_version": version,
                             "promotion_decision": "promoted" if decision.promote else "kept_champion"})
    return test.pr_auc


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
        client.set_registered_model_alias(name, CHALLENGER, version)
        champion = _alias_version(client, name, CHAMPION)
        compared = mv.tags.get("compared_with_version") or None
        current = str(champion.version) if champion is not None else None
        if promoted and current != version and current == compared:
            client.set_registered_model_alias(name, CHAMPION, version)
    print(f"{name} version {version} was already registered for this trial: reused ({mv.tags.get('decision')})",
          file=sys.stderr)
    return version, promoted


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


def _check_registry(client: MlflowClient, name: str) -> None:
    """Fail before the expensive refit if the registry cannot take this name."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise RegistryError(f"registry.model_name={name!r}: {tracking._first_line(exc.message)}") from None


def decide(client: MlflowClient, cfg: Config, data: Dataset, parts: Split, challenger_proba: np.ndarray) -> Decision:
    """Promote only a challenger that beats the champion re-scored now, on the same test rows."""
    name = cfg.registry.model_name
    challenger_ap = float(_ap(data.y[parts.test], challenger_proba))
    champion = _alias_version(client, name, CHAMPION)
    if champion is None:
        return Decision(True, "no champion yet: the first registered model becomes champion", challenger_ap)
    try:
        model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
    except Exception as exc:
        raise RegistryError(f"cannot load the champion (version {champion.version}) to re-score it: "
                            f"{tracking._first_line(str(exc))}") from None
    champion_proba = fraud_proba(model, features_frame(data.X[parts.test]))
    cmp = paired_bootstrap(data.y[parts.test], challenger_proba, champion_proba,
                           n_boot=cfg.evaluation.bootstrap_samples, seed=cfg.split.seed,
                           confidence=cfg.registry.confidence)
    level = f"{cfg.registry.confidence:.0%}"
    summary = (f"challenger test AP {cmp.challenger_ap:.4f} vs champion v{champion.version} {cmp.champion_ap:.4f} "
               f"re-scored on the same {len(parts.test)} test rows: difference {cmp.diff:+.4f}, "
               f"{level} lower bound {cmp.diff_lower:+.4f}, margin {cfg.registry.margin:g}")
    promote = cmp.diff_lower > cfg.registry.margin
    verdict = "better: promoted" if promote else "not better with confidence: champion kept"
    caveat = ""
    if champion.tags.get("data_sha256") not in (None, data.sha256) or champion.tags.get("split") not in (
            None, _split_id(cfg)):
        caveat = " (caveat: the champion was trained on other data or another split, so some of these test " \
                 "rows may have been in its training data and its score may be optimistic)"
    return Decision(promote, f"{summary}: {verdict}{caveat}", cmp.challenger_ap, cmp.champion_ap,
                    str(champion.version), cmp.diff_lower)


def _ap(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, proba))


def _split_id(cfg: Config) -> str:
    return f"test_size={cfg.split.test_size},seed={cfg.split.seed}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def register(client: MlflowClient, cfg: Config, data: Dataset, model_uri: str, run_id: str, test: Any,
             decision: Decision) -> str:
    """Create the version with its decision already written, then move the aliases."""
    name = cfg.registry.model_name
    tags = {
        "test_pr_auc": f"{test.pr_auc:.6f}",
        "test_pr_auc_ci": f"[{test.pr_auc_ci_low:.4f}, {test.pr_auc_ci_high:.4f}]",
        "data_sha256": data.sha256,
        "split": _split_id(cfg),
        "decision": "promoted" if decision.promote else "kept_champion",
        "decision_reason": decision.reason,
        "decided_at": _now(),
        "decided_by": "automatic gate",
        "champion_test_pr_auc": "" if decision.champion_ap is None else f"{decision.champion_ap:.6f}",
        "compared_with_version": decision.champion_version or "",
    }
    if cfg.sweep.study_name:
        tags["optuna.study_name"] = cfg.sweep.study_name
    if cfg.sweep.trial_number is not None:
        tags["optuna.trial_number"] = str(cfg.sweep.trial_number)
    try:
        mv = mlflow.register_model(model_uri, name, tags=tags)
    except MlflowException as exc:
        raise RegistryError(f"registry.model_name={name!r}: {tracking._first_line(exc.message)}") from None
    client.update_model_version(name, mv.version, description=_decision_text(mv.version, tags))
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    if decision.promote:
        if decision.champion_version:
            client.set_model_version_tag(name, mv.version, "previous_champion", decision.champion_version)
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    where = "champion" if decision.promote else "challenger (champion unchanged)"
    print(f"registered {name} version {mv.version} as {where}: {decision.reason}", file=sys.stderr)
    return str(mv.version)


def _decision_text(version: Any, tags: dict[str, str]) -> str:
    return (f"v{version}: {tags['decision']} by {tags['decided_by']} at {tags['decided_at']}. "
            f"{tags['decision_reason']}. Test AP {tags.get('test_pr_auc', '?')} "
            f"(95% CI {tags.get('test_pr_auc_ci', '?')}), data sha256 {tags.get('data_sha256', '?')}.")


def _alias_version(client: MlflowClient, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


# -- the command line --------------------------------------------------------------------------------------


def _get_version(client: MlflowClient, name: str, version: str) -> Any:
    try:
        client.get_registered_model(name)
    except MlflowException:
        raise RegistryError(f"no registered model named {name!r} (see: python -m src.registry list)") from None
    try:
        return client.get_model_version(name, str(version))
    except MlflowException:
        raise RegistryError(f"{name} has no version {version} (see: python -m src.registry list)") from None


def _record(client: MlflowClient, name: str, version: str, decision: str, reason: str, previous: Optional[str]) -> None:
    tags = {"decision": decision, "decision_reason": reason, "decided_at": _now(),
            "decided_by": f"{getpass.getuser()} (manual)"}
    if previous:
        tags["previous_champion"] = previous
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    mv = client.get_model_version(name, version)
    text = f"{mv.description or ''}\n{_decision_text(version, {**mv.tags, **tags})}".strip()
    client.update_model_version(name, version, description=text)


def cmd_list(client: MlflowClient, name: str) -> None:
    try:
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise RegistryError(f"cannot list {name!r}: {tracking._first_line(exc.message)}") from None
    if not versions:
        raise RegistryError(f"no registered model named {name!r} yet: run a sweep first (python -m src.train "
                            f"--multirun)")
    aliases: dict[str, list[str]] = {}
    for alias, version in client.get_registered_model(name).aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    print(f"{'version':>7}  {'aliases':20}  {'test_pr_auc':>11}  {'95% CI':17}  {'decision':14}  reason")
    for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = mv.tags
        names = ",".join(sorted(aliases.get(str(mv.version), [])))
        print(f"{mv.version:>7}  {names:20}  {tags.get('test_pr_auc', '-')[:8]:>11}  "
              f"{tags.get('test_pr_auc_ci', '-'):17}  {tags.get('decision', '-'):14}  "
              f"{tags.get('decision_reason', '')[:120]}")


def cmd_promote(client: MlflowClient, name: str, version: str, reason: str) -> None:
    _get_version(client, name, version)
    current = _alias_version(client, name, CHAMPION)
    previous = str(current.version) if current is not None and str(current.version) != str(version) else None
    _record(client, name, str(version), "manual_promotion", reason, previous)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    print(f"{name} version {version} is champion (was {current.version if current else 'none'}): {reason}")


def cmd_rollback(client: MlflowClient, name: str, to: Optional[str], reason: str) -> None:
    current = _alias_version(client, name, CHAMPION)
    if current is None:
        _get_version(client, name, to or "1")  # a clearer error if the model itself is missing
        raise RegistryError(f"{name} has no champion to roll back")
    target = to or current.tags.get("previous_champion")
    if not target:
        raise RegistryError(f"{name} v{current.version} records no previous champion: name the version with --to")
    if str(target) == str(current.version):
        raise RegistryError(f"version {target} is already the champion")
    _get_version(client, name, target)
    _record(client, name, str(target), "rollback", reason, None)
    client.set_model_version_tag(name, str(current.version), "rolled_back_at", _now())
    client.set_registered_model_alias(name, CHAMPION, str(target))
    print(f"{name} champion rolled back from version {current.version} to {target}: {reason}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.registry", description=__doc__)
    parser.add_argument("--tracking-uri", default=MlflowConfig().tracking_uri)
    parser.add_argument("--name", default=RegistryConfig().model_name, help="registered model name")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="versions with their aliases, test scores and decisions")
    promote = sub.add_parser("promote", help="make a version the champion by hand")
    promote.add_argument("version")
    promote.add_argument("--reason", required=True, help="why (recorded on the version)")
    rollback = sub.add_parser("rollback", help="give the champion alias back to an earlier version")
    rollback.add_argument("--to", default=None, help="version (default: the champion's previous champion)")
    rollback.add_argument("--reason", required=True, help="why (recorded on the version)")
    args = parser.parse_args(argv)
    try:
        if args.command in ("promote", "rollback") and not args.reason.strip():
            raise RegistryError("--reason must say why (it is recorded on the model version)")
        tracking.check_tracking_uri(args.tracking_uri)
        if args.tracking_uri.startswith("sqlite:///") and not Path(args.tracking_uri[len("sqlite:///"):]).exists():
            raise RegistryError(f"no MLflow store at {args.tracking_uri}: run a sweep first, or pass --tracking-uri")
        client = MlflowClient(args.tracking_uri)
        if args.command == "list":
            cmd_list(client, args.name)
        elif args.command == "promote":
            cmd_promote(client, args.name, args.version, args.reason)
        else:
            cmd_rollback(client, args.name, args.to, args.reason)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
