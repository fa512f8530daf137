"""The champion/challenger gate: a new version replaces the champion only if it is better with confidence.

Invariants:
- fail closed: only "the champion alias does not exist" means there is no champion; any other registry error
  moves no alias (decision ``undecided``; ``python -m src.registry decide N`` runs the gate again later);
- same lineage only: a challenger is compared only with a champion whose test score rests on the same data bytes,
  split, features and protocol; another lineage is never promoted automatically (decision ``kept_champion``);
- the test split is a budget: past ``registry.max_test_uses`` looks at one lineage's test rows, the gate stops
  promoting automatically;
- the champion is loaded with this project's own trusted types, never those its MLmodel file lists.

Every decision is written on the version it concerns (tags ``decision``, ``decision_reason``, and its description).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from src.config import Config
from src.data.schema import FEATURES, Dataset
from src.errors import UserError, one_line
from src.model.evaluation import fraud_proba, paired_bootstrap

TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]  # what skops must be allowed to load for a RandomForest
CHAMPION, CHALLENGER = "champion", "challenger"
PROMOTED, KEPT, UNDECIDED = "promoted", "kept_champion", "undecided"
PROTOCOL = "test average precision; one-sided paired bootstrap of the difference on the same test rows"


class RegistryError(UserError):
    pass


class RegistryUnavailable(RegistryError):
    """The registry could not be read or written during the gate: nothing was promoted."""


@dataclass(frozen=True)
class Lineage:
    """What a version's test score depends on: two versions are comparable only if all of it is equal."""

    data_sha256: str
    split: str
    features: str
    protocol: str = PROTOCOL

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def tags(self) -> dict[str, str]:
        return {"lineage": self.key, **{f"lineage.{k}": v for k, v in asdict(self).items()}}

    @classmethod
    def of(cls, cfg: Config, data: Dataset) -> Lineage:
        return cls(data.sha256, cfg.split.describe(), ",".join(FEATURES))

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Optional[Lineage]:
        try:
            return cls(tags["lineage.data_sha256"], tags["lineage.split"], tags["lineage.features"],
                       tags["lineage.protocol"])
        except KeyError:
            return None  # registered before lineages were recorded

    def differences(self, other: Optional[Lineage]) -> list[str]:
        if other is None:
            return ["its lineage is not recorded"]
        names = {"data_sha256": "data", "split": "split", "features": "features", "protocol": "protocol"}
        return [f"{names[k]} {getattr(other, k)[:24]} vs {v[:24]}" for k, v in asdict(self).items()
                if getattr(other, k) != v]


@dataclass
class Decision:
    decision: str  # promoted | kept_champion | undecided
    reason: str
    challenger_ap: float
    test_split_uses: int
    champion_ap: Optional[float] = None
    champion_version: Optional[str] = None
    diff_lower: Optional[float] = None

    @property
    def promote(self) -> bool:
        return self.decision == PROMOTED


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


def champion_version(client: MlflowClient, name: str) -> Any:
    """The champion's version, or None when there is none. Fails closed: any answer other than "this alias (or
    model) does not exist" raises RegistryUnavailable."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None  # no such registered model yet
        error = exc
    try:  # "alias not found" comes as INVALID_PARAMETER_VALUE: make sure, by reading the model's aliases
        if CHAMPION not in client.get_registered_model(name).aliases:
            return None
    except Exception:
        pass
    raise RegistryUnavailable(f"cannot read the {CHAMPION} of {name} ({one_line(error)})")


def test_split_uses(client: MlflowClient, lineage: Lineage) -> int:
    """How many versions (of any model name) were tested on this lineage's test rows so far."""
    return len(client.search_model_versions(f"tags.lineage = '{lineage.key}'"))


def load_trusted(tracking_uri: str, version: Any) -> Any:
    """A registered model loaded with this project's trusted types (the MLmodel file only says which file)."""
    import mlflow
    import skops.io
    import yaml

    mlflow.set_tracking_uri(tracking_uri)  # models:/ sources resolve through the current tracking store
    local = Path(mlflow.artifacts.download_artifacts(version.source, tracking_uri=tracking_uri))
    flavor = yaml.safe_load((local / "MLmodel").read_text())["flavors"]["sklearn"]
    if flavor.get("serialization_format") != "skops":
        raise RegistryError(f"version {version.version} is stored as {flavor.get('serialization_format')!r}, "
                            f"not skops: refused (only skops files are loaded, with a fixed list of trusted types)")
    try:
        return skops.io.load(local / flavor["pickled_model"], trusted=TRUSTED_TYPES)
    except skops.io.exceptions.UntrustedTypesFoundException as exc:
        raise RegistryError(f"version {version.version}'s model file holds types outside the trusted list "
                            f"({one_line(exc)}): refused") from None


def decide(client: MlflowClient, cfg: Config, lineage: Lineage, y_test: np.ndarray, challenger_proba: np.ndarray,
           test_x: np.ndarray, version: Optional[str] = None) -> Decision:
    """Promote only a challenger of the champion's lineage that beats it, re-scored now on the same test rows,
    within the test split's budget. ``version``: the version being decided again later (already counted)."""
    name, rule = cfg.registry.model_name, cfg.registry
    challenger_ap = float(_ap(y_test, challenger_proba))
    try:
        uses = test_split_uses(client, lineage) + (0 if version else 1)
        champion = champion_version(client, name)
    except RegistryUnavailable as exc:
        return Decision(UNDECIDED, f"{exc}: no alias moved", challenger_ap, 0)
    except Exception as exc:  # the registry did not answer: fail closed
        return Decision(UNDECIDED, f"cannot read the registry ({one_line(exc)}): no alias moved", challenger_ap, 0)
    budget = f"test split used {uses} time(s) in this lineage (max {rule.max_test_uses})"
    exclude = version
    if champion is not None and str(champion.version) == exclude:
        return Decision(PROMOTED, f"already the {CHAMPION}", challenger_ap, uses, champion_version=exclude)
    if champion is None:
        return Decision(PROMOTED, f"no champion yet: the first registered model becomes champion; {budget}",
                        challenger_ap, uses)
    differs = lineage.differences(Lineage.from_tags(champion.tags))
    if differs:
        return Decision(KEPT, f"the champion v{champion.version} rests on another lineage ({'; '.join(differs)}): "
                        f"not compared, never promoted automatically (python -m src.registry promote N --reason ... "
                        f"overrides); {budget}", challenger_ap, uses, champion_version=str(champion.version))
    try:
        model = load_trusted(cfg.mlflow.tracking_uri, champion)
    except RegistryError as exc:
        if "refused" in str(exc):
            raise
        return Decision(UNDECIDED, f"cannot load the champion v{champion.version} to re-score it ({exc})",
                        challenger_ap, uses, champion_version=str(champion.version))
    except Exception as exc:  # the registry or artifact store failed: fail closed
        return Decision(UNDECIDED, f"cannot load the champion v{champion.version} to re-score it "
                        f"({one_line(exc)})", challenger_ap, uses, champion_version=str(champion.version))
    cmp, better = compare(cfg, y_test, challenger_proba, fraud_proba(model, features_frame(test_x)))
    summary = (f"challenger test AP {cmp.challenger_ap:.4f} vs champion v{champion.version} {cmp.champion_ap:.4f} "
               f"re-scored on the same {len(y_test)} test rows: difference {cmp.diff:+.4f}, "
               f"{rule.confidence:.0%} lower bound {cmp.diff_lower:+.4f}, margin {rule.margin:g}; {budget}")
    if better and uses > rule.max_test_uses:
        verdict = (f"better, but not promoted automatically: past the test split's budget its score is optimistic; "
                   f"{_fresh_split_hint(cfg)}")
        decision = KEPT
    else:
        verdict = "better: promoted" if better else "not better with confidence: champion kept"
        decision = PROMOTED if better else KEPT
    return Decision(decision, f"{summary}: {verdict}", cmp.challenger_ap, uses, cmp.champion_ap,
                    str(champion.version), cmp.diff_lower)


def compare(cfg: Config, y_test: np.ndarray, challenger_proba: np.ndarray,
            champion_proba: np.ndarray) -> tuple[Any, bool]:
    """The gate's statistical rule: better only if the one-sided lower bound of the paired-bootstrap AP difference
    (both models on the same resampled rows) is above the margin."""
    cmp = paired_bootstrap(y_test, challenger_proba, champion_proba, n_boot=cfg.evaluation.bootstrap_samples,
                           seed=cfg.split.seed, confidence=cfg.registry.confidence)
    return cmp, cmp.diff_lower > cfg.registry.margin


def _fresh_split_hint(cfg: Config) -> str:
    if cfg.split.method == "time":
        return "the time holdout cannot be redrawn: test on newer data (a new data file is a new lineage)"
    return f"draw a fresh split (split.seed={cfg.split.seed + 1} or any unused seed: a new lineage)"


def _ap(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(y, proba))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def decision_tags(decision: Decision, decided_by: str = "automatic gate") -> dict[str, str]:
    return {
        "decision": decision.decision,
        "decision_reason": decision.reason,
        "decided_at": now(),
        "decided_by": decided_by,
        "test_split_uses": str(decision.test_split_uses),
        **({"champion_test_pr_auc": f"{decision.champion_ap:.4f}"} if decision.champion_ap is not None else {}),
        **({"compared_with_version": decision.champion_version} if decision.champion_version else {}),
    }


def apply(client: MlflowClient, name: str, version: str, decision: Decision,
          decided_by: str = "automatic gate") -> None:
    """Write the decision on the version, then move the aliases it calls for (only challenger when undecided)."""
    for key, value in decision_tags(decision, decided_by).items():
        client.set_model_version_tag(name, version, key, value)
    mv = client.get_model_version(name, version)
    client.update_model_version(name, version, description=decision_text(version, mv.tags))
    client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promote and decision.champion_version != version:
        if decision.champion_version:
            client.set_model_version_tag(name, version, "previous_champion", decision.champion_version)
        client.set_registered_model_alias(name, CHAMPION, version)


def decision_text(version: Any, tags: dict[str, str]) -> str:
    return (f"v{version}: {tags.get('decision', '?')} by {tags.get('decided_by', '?')} at "
            f"{tags.get('decided_at', '?')}. {tags.get('decision_reason', '')}. Test AP {tags.get('test_pr_auc', '?')} "
            f"(95% CI {tags.get('test_pr_auc_ci', '?')}), lineage {tags.get('lineage', '?')} "
            f"(data sha256 {tags.get('lineage.data_sha256', tags.get('data_sha256', '?'))}, "
            f"split {tags.get('lineage.split', '?')}), test split uses {tags.get('test_split_uses', '?')}.")


def later_hint(name: str, version: str) -> str:
    return (f"{name} version {version} is registered as {CHALLENGER} but undecided: once the registry answers, run "
            f"python -m src.registry decide {version}")
