"""Paired evidence against the configured model: is a trial better than what a single run gives, on the same folds
and rows, with confidence?

The configured values' trial (the sweeper's start point, never pruned) keeps its out-of-fold predictions as an
artifact of its run; every later complete trial compares its own with them, row by row within each fold, and
returns the mean paired difference with a 95 % bootstrap interval, in AP and in net gain
(``val_pr_auc_vs_configured``, ``..._low``, ``..._high``; the same for ``val_net_gain``). Fold difficulty is shared
by every configuration (±0.045 AP between folds against ~0.015 between configurations): pairing removes it, so the
interval is the noise that matters when choosing between two configurations.

A trial that completes before the configured one (several workers), or in a study without one
(``start_from_config=false``), has no evidence: it says which, and the sweeper does not take it for better.
"""

from __future__ import annotations

import io
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Optional

import mlflow
import numpy as np
from optuna.trial import TrialState

from hydra_plugins.optuna_mlflow_sweeper.job import RUN_ATTR, START_ATTR, TrialLink
from src.config import Config
from src.model.decision import Payoffs, cross_fitted
from src.model.evaluation import CVResult, paired_over_folds

ARTIFACT = "out_of_fold/predictions.npz"
NAMES = ("val_pr_auc", "val_net_gain")


def save(result: CVResult) -> None:
    """The configured trial's out-of-fold predictions, on its (active) run."""
    buffer = io.BytesIO()
    np.savez(buffer, index=result.oof_index, proba=result.oof_proba, fold=result.oof_fold)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(ARTIFACT).name
        path.write_bytes(buffer.getvalue())
        mlflow.log_artifact(str(path), str(Path(ARTIFACT).parent))


@lru_cache(maxsize=2)
def _download(run_id: str) -> Optional[dict[str, np.ndarray]]:
    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=ARTIFACT)
        with np.load(local, allow_pickle=False) as npz:
            return {k: npz[k] for k in ("index", "proba", "fold")}
    except Exception:  # noqa: BLE001 (no evidence is a state, not an error: the trial says so)
        return None


def reference(link: TrialLink) -> tuple[Optional[int], Optional[dict[str, np.ndarray]]]:
    """The configured trial's number and its out-of-fold predictions, once it is complete."""
    for trial in link.trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if trial.user_attrs.get(START_ATTR) and trial.user_attrs.get(RUN_ATTR):
            return trial.number, _download(str(trial.user_attrs[RUN_ATTR]))
    return None, None


def evidence(cfg: Config, y: np.ndarray, amount: np.ndarray, result: CVResult,
             start: dict[str, np.ndarray]) -> dict[str, float]:
    """This trial against the configured one, on the same rows and folds (both arrays in the folds' order)."""
    if not (np.array_equal(start["index"], result.oof_index) and np.array_equal(start["fold"], result.oof_fold)):
        return {}  # other rows or folds (cannot happen within one study): no pairing, no evidence
    y_oof, fold_of = y[result.oof_index], result.oof_fold
    n_boot, seed = cfg.evaluation.bootstrap_samples, cfg.split.seed
    out: dict[str, float] = {}
    ap = paired_over_folds(y_oof, fold_of, result.oof_proba, start["proba"], n_boot, seed)
    payoffs = Payoffs.of(cfg.decision, y_oof, amount[result.oof_index])
    gains = [_cross_fitted_rows(payoffs, p, fold_of) for p in (result.oof_proba, start["proba"])]
    money = paired_over_folds(y_oof, fold_of, result.oof_proba, start["proba"], n_boot, seed,
                              gains=(gains[0], gains[1]))
    for name, interval in zip(NAMES, (ap, money), strict=True):
        out.update({f"{name}_vs_configured": interval.diff, f"{name}_vs_configured_low": interval.low,
                    f"{name}_vs_configured_high": interval.high})
    return out


def _cross_fitted_rows(payoffs: Payoffs, proba: np.ndarray, fold_of: np.ndarray) -> np.ndarray:
    """Each row's gain at its fold's cross-fitted threshold (the threshold of the other folds)."""
    cross = cross_fitted(payoffs, proba, fold_of)
    gains = np.zeros(len(proba))
    for k, threshold in zip(np.unique(fold_of), cross.fold_thresholds, strict=True):
        rows = fold_of == k
        gains[rows] = payoffs.subset(np.flatnonzero(rows)).at(proba[rows], threshold)
    return gains


def for_trial(link: Optional[TrialLink], cfg: Config, y: np.ndarray, amount: np.ndarray,
              result: CVResult) -> tuple[dict[str, float], str]:
    """(the values to return, a note) for a trial that is not the configured one."""
    if link is None:
        return {}, ""
    _, start = reference(link)
    if start is None:
        return {}, missing(link.trial.study.get_trials(deepcopy=False))
    found = evidence(cfg, y, amount, result, start)
    return found, "" if found else "other folds than the configured trial's: no paired evidence"


def missing(trials: list) -> str:
    """Why there is no evidence: the configured trial is yet to finish (several workers), or the study has none
    (``hydra.sweeper.start_from_config=false``): the trial that takes the configured values is marked when asked."""
    if any(t.user_attrs.get(START_ATTR) for t in trials):
        return "the configured trial had not finished: no paired evidence"
    return "this study has no trial of the configured values: no paired evidence"


KEYS = tuple(f"{n}_vs_configured{s}" for n in NAMES for s in ("", "_low", "_high"))
ITSELF = dict.fromkeys(KEYS, 0.0)  # the configured trial against itself
