"""The champion/challenger gate: a new version replaces the champion only if it is better with confidence.

The decision is made in two steps, as MLflow's own model validation does: ``gather`` collects the evidence from the
registry (the champion, its lineage, the champion re-scored now on the same test rows, the paired comparison), and
``decide`` is a pure rule over that evidence and the lineage's rule (the tests call it directly).

Invariants:
- fail closed: only "the champion alias does not exist" means there is no champion; any other registry error, a
  champion that cannot be loaded, or one whose re-score does not reproduce its recorded test AP, moves no alias
  (decision ``undecided``; ``python -m src.registry decide N`` decides it later);
- same lineage only (data, split, test rows, features, cost model, protocol): another lineage is never compared,
  never promoted automatically (decision ``kept_champion``);
- the test split is a budget: past the lineage's ``max_test_uses`` looks, the gate stops promoting automatically;
- the rule (criterion, confidence, margin, budget) is the lineage's, fixed at its first use (src.lifecycle.ledger);
- the champion is loaded with this project's own trusted types and re-scored with this project's own code
  (src.lifecycle.package); each model is judged at its own threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Optional

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score

from src.config import DecisionConfig
from src.data.schema import FEATURES
from src.errors import one_line
from src.lifecycle.ledger import RegistryError, RegistryUnavailable, Rule
from src.lifecycle.lineage import Lineage
from src.lifecycle.package import ModelRefused, load_version
from src.model.decision import Payoffs, paired_gain
from src.model.evaluation import paired_bootstrap
from src.model.inputs import derive

CHAMPION, CHALLENGER = "champion", "challenger"


class Verdict(StrEnum):
    """The version tag ``decision`` the gate writes."""

    PROMOTED = "promoted"
    KEPT = "kept_champion"
    UNDECIDED = "undecided"


PROMOTED, KEPT, UNDECIDED = Verdict.PROMOTED, Verdict.KEPT, Verdict.UNDECIDED


@dataclass(frozen=True, kw_only=True)
class TestRows:
    """The lineage's test rows as the gate scores them: the file's columns, labels, and what each decision earns."""

    X: np.ndarray
    y: np.ndarray
    payoffs: Payoffs

    @classmethod
    def of(cls, X: np.ndarray, y: np.ndarray, amount: np.ndarray, cost: DecisionConfig) -> TestRows:
        return cls(X=X, y=y, payoffs=Payoffs.of(cost, y, amount))


@dataclass(frozen=True, kw_only=True)
class Scored:
    """A model on the test rows at its own threshold."""

    proba: np.ndarray
    threshold: float

    def ap(self, rows: TestRows) -> float:
        return float(average_precision_score(rows.y, self.proba))

    def gains(self, rows: TestRows) -> np.ndarray:
        return rows.payoffs.at(self.proba, self.threshold)


@dataclass(frozen=True, kw_only=True)
class Comparison:
    ap_diff: float
    ap_lower: float
    gain_diff: float
    gain_lower: float


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """Everything the rule looks at, gathered from the registry (or why it could not be)."""

    challenger_ap: float
    challenger_gain: float
    uses: int
    n_rows: int
    unavailable: Optional[str] = None
    champion_version: Optional[str] = None
    champion_is_this_version: bool = False
    lineage_differences: tuple[str, ...] = ()
    champion_ap: Optional[float] = None
    champion_recorded_ap: Optional[float] = None
    champion_gain: Optional[float] = None
    comparison: Optional[Comparison] = None


@dataclass(frozen=True, kw_only=True)
class Decision:
    verdict: Verdict
    reason: str
    uses: int
    champion_version: Optional[str] = None
    champion_ap: Optional[float] = None

    @property
    def promote(self) -> bool:
        return self.verdict == Verdict.PROMOTED


REPRODUCED = 1e-9  # the champion re-scored now must give its recorded test AP (the same forest on the same rows)


def decide(e: Evidence, rule: Rule, fresh_split_hint: str) -> Decision:
    """The gate's rule, pure: promote only a challenger of the champion's lineage whose paired lower bound on the
    rule's criterion is above the margin, within the test split's budget."""
    budget = f"test split used {e.uses} time(s) in this lineage (max {rule.max_test_uses})"
    champ = e.champion_version
    if e.unavailable is not None:
        return Decision(verdict=UNDECIDED, reason=f"{e.unavailable}: no alias moved", uses=e.uses,
                        champion_version=champ)
    if e.champion_is_this_version:
        return Decision(verdict=PROMOTED, reason=f"already the {CHAMPION}", uses=e.uses, champion_version=champ)
    if champ is None:
        if e.uses > rule.max_test_uses:
            return Decision(verdict=KEPT, reason=f"no champion yet, but {budget}: past the budget a model is not "
                            f"promoted automatically ({fresh_split_hint}; or python -m src.registry promote N "
                            f"--reason ...)", uses=e.uses)
        return Decision(verdict=PROMOTED, reason=f"no champion yet: the first registered model becomes champion; "
                        f"{budget}", uses=e.uses)
    if e.lineage_differences:
        return Decision(verdict=KEPT, reason=f"the champion v{champ} rests on another lineage "
                        f"({'; '.join(e.lineage_differences)}): not compared, never promoted automatically (python -m "
                        f"src.registry promote N --reason ... overrides); {budget}", uses=e.uses,
                        champion_version=champ)
    assert e.champion_ap is not None and e.comparison is not None
    if e.champion_recorded_ap is None or abs(e.champion_ap - e.champion_recorded_ap) > REPRODUCED:
        recorded = "none" if e.champion_recorded_ap is None else f"{e.champion_recorded_ap:.6f}"
        return Decision(verdict=UNDECIDED, reason=f"the champion v{champ} re-scored now gives test AP "
                        f"{e.champion_ap:.6f}, not its recorded {recorded}: its model or the test rows changed, so "
                        f"the two are not compared; no alias moved", uses=e.uses, champion_version=champ)
    c = e.comparison
    better = (c.ap_lower if rule.criterion == "pr_auc" else c.gain_lower) > rule.margin
    summary = (f"challenger test AP {e.challenger_ap:.4f} vs champion v{champ} {e.champion_ap:.4f}, net gain "
               f"{e.challenger_gain:,.0f} vs {e.champion_gain:,.0f}, re-scored on the same {e.n_rows} test rows, each "
               f"at its own threshold: AP difference {c.ap_diff:+.4f} ({rule.confidence:.0%} lower bound "
               f"{c.ap_lower:+.4f}), net gain difference {c.gain_diff:+,.0f} (lower bound {c.gain_lower:+,.0f}); "
               f"criterion {rule.criterion}, margin {rule.margin:g}; {budget}")
    if better and e.uses > rule.max_test_uses:
        return Decision(verdict=KEPT, reason=f"{summary}: better, but not promoted automatically: past the test "
                        f"split's budget its score is optimistic; {fresh_split_hint}", uses=e.uses,
                        champion_version=champ, champion_ap=e.champion_ap)
    verdict = PROMOTED if better else KEPT
    text = "better: promoted" if better else "not better with confidence: champion kept"
    return Decision(verdict=verdict, reason=f"{summary}: {text}", uses=e.uses, champion_version=champ,
                    champion_ap=e.champion_ap)


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
    except Exception:  # noqa: BLE001 (the registry is failing: fail closed below)
        pass
    raise RegistryUnavailable(f"cannot read the {CHAMPION} of {name} ({one_line(error)})")


def rescore(tracking_uri: str, version: Any, rows: TestRows) -> tuple[Scored, float | None]:
    """A version's forest on the test rows at its recorded threshold, and its recorded test AP."""
    forest, config = load_version(tracking_uri, version)
    features = derive(np.asarray(rows.X, dtype=np.float64), FEATURES, str(config.get("time_feature", "raw")))
    frame = pd.DataFrame(features, columns=forest.feature_names_in_)
    proba = forest.predict_proba(frame)[:, list(forest.classes_).index(1)]
    recorded = version.tags.get("test_pr_auc_exact")
    return Scored(proba=proba, threshold=float(config["decision_threshold"])), (
        float(recorded) if recorded is not None else None)


def gather(client: MlflowClient, tracking_uri: str, name: str, lineage: Lineage, rule: Rule, rows: TestRows,
           challenger: Scored, uses: int, version: str, n_boot: int, seed: int) -> Evidence:
    """The evidence for ``version`` against the current champion (read now: call it inside the version's turn)."""
    base = {"challenger_ap": challenger.ap(rows), "challenger_gain": float(challenger.gains(rows).sum()),
            "uses": uses, "n_rows": len(rows.y)}
    try:
        champion = champion_version(client, name)
    except RegistryUnavailable as exc:
        return Evidence(**base, unavailable=str(exc))
    except Exception as exc:  # noqa: BLE001 (the registry did not answer: fail closed)
        return Evidence(**base, unavailable=f"cannot read the registry ({one_line(exc)})")
    if champion is None:
        return Evidence(**base)
    champ = str(champion.version)
    if champ == str(version):
        return Evidence(**base, champion_version=champ, champion_is_this_version=True)
    differs = lineage.differences(Lineage.from_tags(champion.tags))
    if differs:
        return Evidence(**base, champion_version=champ, lineage_differences=tuple(differs))
    try:
        scored, recorded = rescore(tracking_uri, champion, rows)
    except ModelRefused:
        raise
    except Exception as exc:  # noqa: BLE001 (the registry or artifact store failed: fail closed)
        return Evidence(**base, champion_version=champ,
                        unavailable=f"cannot load the champion v{champ} to re-score it ({one_line(exc)})")
    ap = paired_bootstrap(rows.y, challenger.proba, scored.proba, n_boot=n_boot, seed=seed,
                          confidence=rule.confidence)
    gain = paired_gain(challenger.gains(rows), scored.gains(rows), n_boot=n_boot, seed=seed,
                       confidence=rule.confidence)
    return Evidence(**base, champion_version=champ, champion_ap=scored.ap(rows), champion_recorded_ap=recorded,
                    champion_gain=float(scored.gains(rows).sum()),
                    comparison=Comparison(ap_diff=ap.diff, ap_lower=ap.diff_lower, gain_diff=gain.diff,
                                          gain_lower=gain.lower))


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def decision_tags(decision: Decision, decided_by: str = "automatic gate") -> dict[str, str]:
    return {
        "decision": decision.verdict.value,
        "decision_reason": decision.reason,
        "decided_at": now(),
        "decided_by": decided_by,
        **({"champion_test_pr_auc": f"{decision.champion_ap:.4f}"} if decision.champion_ap is not None else {}),
        **({"compared_with_version": decision.champion_version} if decision.champion_version else {}),
    }


def apply(client: MlflowClient, name: str, version: str, decision: Decision, turn: Any,
          decided_by: str = "automatic gate") -> None:
    """Within the version's turn: the aliases the decision calls for, then the decision on the version. A promotion
    checks first that the champion is still the one it was compared with (it is, within a turn: belt and braces)."""
    turn.check()
    if decision.promote and decision.champion_version != version:
        current = champion_version(client, name)
        now_champion = str(current.version) if current is not None else None
        if now_champion != decision.champion_version:
            raise RegistryUnavailable(f"the {CHAMPION} of {name} moved from v{decision.champion_version} to "
                                      f"v{now_champion} during the decision: not promoted")
        if decision.champion_version:
            client.set_model_version_tag(name, version, "previous_champion", decision.champion_version)
        client.set_registered_model_alias(name, CHAMPION, version)
    client.set_registered_model_alias(name, CHALLENGER, version)
    for key, value in decision_tags(decision, decided_by).items():
        client.set_model_version_tag(name, version, key, value)
    mv = client.get_model_version(name, version)
    client.update_model_version(name, version, description=decision_text(version, mv.tags))


def decision_text(version: Any, tags: dict[str, str]) -> str:
    return (f"v{version}: {tags.get('decision', '?')} by {tags.get('decided_by', '?')} at "
            f"{tags.get('decided_at', '?')}. {tags.get('decision_reason', '')}. Test AP {tags.get('test_pr_auc', '?')} "
            f"(95% CI {tags.get('test_pr_auc_ci', '?')}), net gain {tags.get('test_net_gain', '?')} at threshold "
            f"{tags.get('decision_threshold', '?')} (cost model {tags.get('cost_model', '?')}), lineage "
            f"{tags.get('lineage', '?')} (data sha256 {tags.get('lineage.data_sha256', tags.get('data_sha256', '?'))}, "
            f"split {tags.get('lineage.split', '?')}), test split uses {tags.get('test_split_uses', '?')}.")


def later_hint(name: str, version: str) -> str:
    return (f"{name} version {version} is registered as {CHALLENGER} but undecided: once the registry answers, run "
            f"python -m src.registry decide {version}")
