"""The champion/challenger gate: a new version replaces the champion only if it is better with confidence.

The champion is loaded and re-scored now on the same test rows as the challenger, and a paired bootstrap of the
AP difference decides. Every decision is written on the version it concerns (tags and description).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Optional

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src.config import Config
from src.data import Dataset
from src.errors import UserError, one_line
from src.evaluation import fraud_proba, paired_bootstrap
from src.split import Split
from src.synthetic import FEATURES

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


def check_registry(client: MlflowClient, name: str) -> None:
    """Fail before the expensive refit if the registry cannot take this name."""
    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return
        raise RegistryError(f"registry.model_name={name!r}: {one_line(exc)}") from None


def alias_version(client: MlflowClient, name: str, alias: str) -> Any:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def decide(client: MlflowClient, cfg: Config, data: Dataset, parts: Split, challenger_proba: np.ndarray) -> Decision:
    """Promote only a challenger that beats the champion re-scored now, on the same test rows."""
    name = cfg.registry.model_name
    challenger_ap = float(_ap(data.y[parts.test], challenger_proba))
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        return Decision(True, "no champion yet: the first registered model becomes champion", challenger_ap)
    try:
        model = mlflow.sklearn.load_model(f"models:/{name}@{CHAMPION}")
    except Exception as exc:
        raise RegistryError(f"cannot load the champion (version {champion.version}) to re-score it: "
                            f"{one_line(exc)}") from None
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
            None, split_id(cfg)):
        caveat = " (caveat: the champion was trained on other data or another split, so some of these test " \
                 "rows may have been in its training data and its score may be optimistic)"
    return Decision(promote, f"{summary}: {verdict}{caveat}", cmp.challenger_ap, cmp.champion_ap,
                    str(champion.version), cmp.diff_lower)


def _ap(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, proba))


def split_id(cfg: Config) -> str:
    return f"test_size={cfg.split.test_size},seed={cfg.split.seed}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def register(client: MlflowClient, cfg: Config, data: Dataset, model_uri: str, run_id: str, test: Any,
             decision: Decision) -> str:
    """Create the version with its decision already written, then move the aliases."""
    name = cfg.registry.model_name
    tags = {
        "test_pr_auc": f"{test.pr_auc:.6f}",
        "test_pr_auc_ci": f"[{test.pr_auc_ci_low:.4f}, {test.pr_auc_ci_high:.4f}]",
        "data_sha256": data.sha256,
        "split": split_id(cfg),
        "decision": "promoted" if decision.promote else "kept_champion",
        "decision_reason": decision.reason,
        "decided_at": now(),
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
        raise RegistryError(f"registry.model_name={name!r}: {one_line(exc)}") from None
    client.update_model_version(name, mv.version, description=decision_text(mv.version, tags))
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    if decision.promote:
        if decision.champion_version:
            client.set_model_version_tag(name, mv.version, "previous_champion", decision.champion_version)
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    where = "champion" if decision.promote else "challenger (champion unchanged)"
    print(f"registered {name} version {mv.version} as {where}: {decision.reason}", file=sys.stderr)
    return str(mv.version)


def decision_text(version: Any, tags: dict[str, str]) -> str:
    return (f"v{version}: {tags['decision']} by {tags['decided_by']} at {tags['decided_at']}. "
            f"{tags['decision_reason']}. Test AP {tags.get('test_pr_auc', '?')} "
            f"(95% CI {tags.get('test_pr_auc_ci', '?')}), data sha256 {tags.get('data_sha256', '?')}.")
