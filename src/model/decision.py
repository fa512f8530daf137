"""Money: what flagging a transaction earns under the cost model, the threshold that earns most, and how sure we are.

Invariants:
- a threshold is always chosen on predictions whose labels the scored rows never saw: per fold, on the other folds'
  out-of-fold predictions (cross-fitting); for a trial, on all of its out-of-fold predictions; never on test rows;
- "flag" means fraud probability >= threshold, everywhere (training, the gate, the served model);
- the threshold search is exact: every cut between two distinct predicted probabilities is tried (not a grid).

Pure functions (numpy and scipy): no MLflow, no Optuna.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from src.config import DecisionConfig


@dataclass(frozen=True)
class Payoffs:
    """Per row: what flagging it earns and what letting it through earns (negative where it costs)."""

    flagged: np.ndarray
    passed: np.ndarray

    @classmethod
    def of(cls, cost: DecisionConfig, y: np.ndarray, amount: np.ndarray) -> Payoffs:
        fraud, amount = np.asarray(y) == 1, np.asarray(amount, dtype=np.float64)
        flagged = np.where(fraud, cost.caught_fraud_gain + cost.caught_fraud_gain_per_amount * amount,
                           -(cost.false_alarm_cost + cost.false_alarm_cost_per_amount * amount))
        passed = np.where(fraud, -(cost.missed_fraud_cost + cost.missed_fraud_cost_per_amount * amount),
                          cost.passed_legit_gain + cost.passed_legit_gain_per_amount * amount)
        return cls(flagged, passed)

    def at(self, proba: np.ndarray, threshold: float) -> np.ndarray:
        """Each row's gain when flagged at ``threshold`` (p >= threshold)."""
        return np.where(np.asarray(proba) >= threshold, self.flagged, self.passed)

    def subset(self, rows: np.ndarray) -> Payoffs:
        return Payoffs(self.flagged[rows], self.passed[rows])


def net_gain(payoffs: Payoffs, proba: np.ndarray, threshold: float) -> float:
    return float(payoffs.at(proba, threshold).sum())


@dataclass(frozen=True)
class GainCurve:
    """Net gain at every threshold that changes a decision: flag the rows with p >= thresholds[i] -> gains[i]."""

    thresholds: np.ndarray  # decreasing; the first flags nothing
    gains: np.ndarray
    sorted_proba: np.ndarray  # the rows' probabilities, decreasing
    cumulative: np.ndarray  # net gain with the first k + 1 rows of sorted_proba flagged

    def best(self) -> tuple[float, float]:
        """(threshold, net gain) of the most profitable cut; among equal gains the highest threshold (fewest
        alerts)."""
        i = int(np.argmax(self.gains))  # argmax takes the first: the highest threshold
        return float(self.thresholds[i]), float(self.gains[i])

    def at(self, thresholds: np.ndarray) -> np.ndarray:
        """The net gain at any thresholds (for plots, and for keeping the curve with a trial on a grid)."""
        flagged = len(self.sorted_proba) - np.searchsorted(self.sorted_proba[::-1], thresholds, side="left")
        nothing = self.gains[0]
        return np.where(flagged > 0, self.cumulative[np.maximum(flagged - 1, 0)], nothing)


def gain_curve(payoffs: Payoffs, proba: np.ndarray) -> GainCurve:
    """Every cut point at once: rows sorted by probability, flagged from the top down, gains as a cumulative sum.
    A threshold halfway between two distinct probabilities flags exactly the rows above it."""
    proba = np.asarray(proba, dtype=np.float64)
    order = np.argsort(-proba, kind="stable")
    p = proba[order]
    nothing = float(payoffs.passed.sum())
    cumulative = nothing + np.cumsum((payoffs.flagged - payoffs.passed)[order])
    last_of_tie = np.r_[np.flatnonzero(np.diff(p) != 0), len(p) - 1]  # flag a whole group of equal p or none of it
    below = np.r_[p[last_of_tie[:-1] + 1], -np.inf]  # the next lower probability after each group
    cut = np.where(np.isfinite(below), (p[last_of_tie] + below) / 2, p[last_of_tie] / 2)
    above_all = min(1.0, (p[0] + 1.0) / 2) if len(p) else 1.0
    return GainCurve(np.r_[above_all, cut], np.r_[nothing, cumulative[last_of_tie]], p, cumulative)


def best_threshold(payoffs: Payoffs, proba: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises net gain on these rows, and that gain (in-sample: choose, never score, here)."""
    return gain_curve(payoffs, proba).best()


@dataclass(frozen=True)
class CrossFitted:
    """Net gain per fold, each at the threshold chosen on the other folds' out-of-fold predictions."""

    fold_gains: list[float]
    fold_thresholds: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_gains))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_gains, ddof=1)) if len(self.fold_gains) > 1 else float("nan")


def cross_fitted(payoffs: Payoffs, proba: np.ndarray, fold_of: np.ndarray) -> CrossFitted:
    """No fold's score saw its own labels: fold k is scored at the best threshold of the rows of all other folds."""
    gains, thresholds = [], []
    for k in np.unique(fold_of):
        inside, outside = fold_of == k, fold_of != k
        threshold, _ = best_threshold(payoffs.subset(outside), proba[outside])
        thresholds.append(threshold)
        gains.append(net_gain(payoffs.subset(inside), proba[inside], threshold))
    return CrossFitted(gains, thresholds)


def halves(y: np.ndarray, seed: int) -> np.ndarray:
    """Two stratified halves of one validation split (0/1 per row), to cross-fit a threshold when there is only one
    fold."""
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=np.int64)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(np.asarray(y) == label))
        fold_of[rows[: len(rows) // 2]] = 1
    return fold_of


def gain_interval(gains: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a net gain (the sum of the rows' gains, rows resampled with replacement)."""
    res = stats.bootstrap((np.asarray(gains, dtype=np.float64),), np.sum, vectorized=True, n_resamples=n_boot,
                          batch=100, confidence_level=level, method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class Operating:
    """A model at one threshold on one set of rows: what a fraud team reads off it."""

    threshold: float
    net_gain: float
    recall: float
    precision: float
    alerts_per_1000: float

    @classmethod
    def of(cls, payoffs: Payoffs, y: np.ndarray, proba: np.ndarray, threshold: float) -> Operating:
        flagged, fraud = np.asarray(proba) >= threshold, np.asarray(y) == 1
        caught = int((flagged & fraud).sum())
        return cls(threshold=float(threshold), net_gain=net_gain(payoffs, proba, threshold),
                   recall=caught / max(1, int(fraud.sum())), precision=caught / max(1, int(flagged.sum())),
                   alerts_per_1000=1000.0 * float(flagged.mean()) if len(flagged) else 0.0)


@dataclass(frozen=True)
class PairedGain:
    diff: float  # challenger's net gain minus the champion's, on the same rows
    lower: float  # its one-sided lower confidence bound


def paired_gain(challenger_rows: np.ndarray, champion_rows: np.ndarray, n_boot: int, seed: int,
                confidence: float) -> PairedGain:
    """Both models' per-row gains (each at its own threshold) on the same resampled rows: the lower bound of the
    difference of the sums at ``confidence``."""
    diff = np.asarray(challenger_rows, dtype=np.float64) - np.asarray(champion_rows, dtype=np.float64)
    res = stats.bootstrap((diff,), np.sum, vectorized=True, n_resamples=n_boot, batch=100,
                          confidence_level=confidence, alternative="greater", method="percentile",
                          rng=np.random.default_rng(seed))
    return PairedGain(float(diff.sum()), float(res.confidence_interval.low))


@dataclass(frozen=True)
class OutOfFold:
    """What a trial's out-of-fold predictions say about money: the threshold chosen on all of them (the trial's
    result, used by its final stage), the cross-fitted net gain per fold, and the curve to plot."""

    threshold: float
    pinned: bool  # decision.threshold was given: no choice was made
    cross: CrossFitted
    grid: np.ndarray  # thresholds 0, 0.005, ..., 1
    grid_gains: np.ndarray  # the out-of-fold net gain at each (all folds' rows together)


GRID = np.round(np.linspace(0.0, 1.0, 201), 3)


def out_of_fold(cost: DecisionConfig, y: np.ndarray, proba: np.ndarray, amount: np.ndarray,
                fold_of: np.ndarray) -> OutOfFold:
    payoffs = Payoffs.of(cost, y, amount)
    curve = gain_curve(payoffs, proba)
    if cost.threshold is not None:
        rows = [fold_of == k for k in np.unique(fold_of)]
        cross = CrossFitted([net_gain(payoffs.subset(r), proba[r], cost.threshold) for r in rows],
                            [float(cost.threshold)] * len(rows))
        return OutOfFold(float(cost.threshold), True, cross, GRID, curve.at(GRID))
    return OutOfFold(curve.best()[0], False, cross_fitted(payoffs, proba, fold_of), GRID, curve.at(GRID))
