"""A trial whose result is already known: it would grow the same forests on the same folds as an earlier COMPLETE
trial of the study (TPE proposes the best region again and again, and scikit-learn grows the same trees for
min_samples_split up to 2 * min_samples_leaf), so it takes that trial's result instead of refitting for minutes.

Invariant: two trials share a result only if everything it depends on is equal (``result_key``): the data's bytes,
the split, the folds and their looks, the features, the cost model and the forest's effective settings. The final
stage checks the same key against its trial: it packages exactly what the trial scored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Optional

from optuna.trial import FrozenTrial, TrialState

from hydra_plugins.optuna_mlflow_sweeper.job import RUN_ATTR, TrialLink
from src.config import Config
from src.jobs import tracking
from src.model.forest import forest_key

FOREST_ATTR = "forest_key"  # trial user attribute: what decides the trial's result
TWIN_ATTR = "same_forest_as_trial"  # trial user attribute and run tag: the earlier trial whose result was taken
CURVE_ATTR = "net_gain_curve"  # trial user attribute: out-of-fold net gain on src.model.decision.GRID
# What a twin takes from the trial it repeats, beside the objective.
KEPT = ("val_pr_auc", "val_pr_auc_std", "val_pr_auc_sem", "val_roc_auc", "val_net_gain", "val_net_gain_std",
        "val_net_gain_sem", "decision_threshold", *(f"{n}_vs_configured{s}" for n in ("val_pr_auc", "val_net_gain")
                                                    for s in ("", "_low", "_high")))


def result_key(cfg: Config, data: Any) -> str:
    """A trial's result depends on this only."""
    parts = {"data": data.sha256, "dataset": dataclasses.asdict(cfg.dataset), "split": dataclasses.asdict(cfg.split),
             "evaluation": dataclasses.asdict(cfg.evaluation), "model": forest_key(cfg.model),
             "features": dataclasses.asdict(cfg.features), "decision": dataclasses.asdict(cfg.decision)}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def earlier_twin(link: TrialLink, key: str) -> Optional[FrozenTrial]:
    """A COMPLETE trial of the study with the same result key (recording this trial's key first)."""
    trial = link.trial
    trial.set_user_attr(FOREST_ATTR, key)
    for earlier in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if earlier.user_attrs.get(FOREST_ATTR) == key and earlier.number != trial.number:
            trial.set_user_attr(TWIN_ATTR, earlier.number)
            link.note(f"the same forests as trial {earlier.number}: its result, not refitted")
            return earlier
    return None


def same_as(twin: FrozenTrial, link: TrialLink, log: tracking.RunLogger) -> dict[str, Any]:
    """The earlier trial's result as this trial's, logged on this trial's run (fit_seconds 0: nothing was fitted).
    Every value the earlier trial returned is on it (the sweeper keeps them, the objective included)."""
    metrics = {k: float(twin.user_attrs[k]) for k in KEPT if isinstance(twin.user_attrs.get(k), (int, float))
               and not isinstance(twin.user_attrs.get(k), bool)}
    metrics["fit_seconds"] = 0.0
    if CURVE_ATTR in twin.user_attrs:
        link.trial.set_user_attr(CURVE_ATTR, twin.user_attrs[CURVE_ATTR])
    threshold = metrics.pop("decision_threshold", None)
    log(tracking.batch, tags={TWIN_ATTR: str(twin.number), "same_forest_as_run": twin.user_attrs.get(RUN_ATTR, "")},
        params={"decision_threshold": f"{threshold:.6g}"} if threshold is not None else None,
        metrics=[(k, v, 0) for k, v in metrics.items()])
    returned = {**metrics, **({"decision_threshold": threshold} if threshold is not None else {})}
    return {**returned, **({"mlflow_lost": log.lost} if log.lost else {})}
