"""Scoring: the cross-validated objective, the one-time test evaluation, bootstrap intervals, plots.

Pure functions (no MLflow). The objective is average precision (area under the precision-recall curve): with
0.17 % frauds, ROC AUC is close to 1 for any reasonable model and says little.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin, clone
from sklearn.metrics import average_precision_score, roc_auc_score

from src.data.schema import FEATURES, Dataset
from src.data.split import Split

# Called after each fold with (fold index, mean AP so far, seconds fitting and scoring so far); may raise to stop
# early (pruning).
FoldCallback = Callable[[int, float, float], None]
# Called for each row look of the first fold with (look index, rows fitted, that forest's AP, seconds so far); may
# raise to stop early: the cheapest fidelity is a forest grown on a fraction of the fold's rows.
RowsCallback = Callable[[int, int, float, float], None]
# Called once, part-way through the first fold, with (trees grown so far, that small forest's AP, seconds so far);
# may raise to stop early: a weak configuration is visible long before its whole forest is grown.
LookCallback = Callable[[int, float, float], None]


@dataclass
class CVResult:
    fold_pr_auc: list[float]
    fold_roc_auc: list[float]
    fit_seconds: float
    # With a single validation split there is no spread over folds: a bootstrap standard error stands in.
    single_split_std: float
    # Out-of-fold fraud probabilities for the rows that were validated (aligned with oof_index), and the fold that
    # validated each row.
    oof_index: np.ndarray = field(repr=False)
    oof_proba: np.ndarray = field(repr=False)
    oof_fold: np.ndarray = field(repr=False)

    @property
    def pr_auc(self) -> float:
        return float(np.mean(self.fold_pr_auc))

    @property
    def pr_auc_std(self) -> float:
        if len(self.fold_pr_auc) > 1:
            return float(np.std(self.fold_pr_auc, ddof=1))
        return self.single_split_std

    @property
    def roc_auc(self) -> float:
        return float(np.mean(self.fold_roc_auc))


def fraud_proba(model: ClassifierMixin, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(X)[:, list(model.classes_).index(1)]


def cross_validate(
    model: ClassifierMixin, data: Dataset, split: Split, on_fold: Optional[FoldCallback] = None,
    look_trees: Optional[int] = None, on_look: Optional[LookCallback] = None,
    row_looks: Sequence[float] = (), on_rows: Optional[RowsCallback] = None, seed: int = 0,
    X: Optional[np.ndarray] = None, scale_looks: bool = False,
) -> CVResult:
    """Fit a fresh clone per fold of the training split; never touches the test rows.

    With look_trees (and a forest of more trees than that), the first fold's forest is grown in two steps: the
    first look_trees trees are scored (on_look) before the rest are added. Growing a forest with warm_start gives
    the same trees as fitting it at once, so the look costs only one extra prediction.

    With row_looks (fractions of the first fold's fitting rows, increasing), a forest is first grown on each
    fraction (a stratified subsample, each one inside the next) and scored on the whole first validation fold
    (on_rows): a look at 1/9 of the rows costs about a ninth of the fold, as successive halving over rows does.
    With ``scale_looks`` that forest's leaf and split sizes are scaled to the share (scaled_to_rows).

    ``X``: the forest's inputs for every row of ``data`` (src.model.inputs.derive); ``data.X`` by default.
    """
    X = data.X if X is None else X
    fold_ap, fold_roc, seconds = [], [], 0.0
    oof_index, oof_proba, oof_fold = [], [], []
    for k, (fit_idx, val_idx) in enumerate(split.folds):
        start = time.perf_counter()
        X_fit, y_fit, y_val = X[fit_idx], data.y[fit_idx], data.y[val_idx]
        total = model.get_params().get("n_estimators")
        if k == 0 and on_rows is not None:
            for i, (rows, look_ap) in enumerate(_row_looks(model, X, data.y, fit_idx, val_idx, row_looks, seed,
                                                             scale_looks)):
                on_rows(i, rows, look_ap, seconds + time.perf_counter() - start)
        if k == 0 and look_trees is not None and on_look is not None and total is not None and total > look_trees:
            with warnings.catch_warnings():
                # scikit-learn warns that "balanced" weights may drift under warm_start when the data changes;
                # here both fits see the same rows, so the weights are the same.
                warnings.filterwarnings("ignore", message="class_weight presets", category=UserWarning)
                fitted = clone(model).set_params(n_estimators=look_trees, warm_start=True).fit(X_fit, y_fit)
                look_ap = float(average_precision_score(y_val, fraud_proba(fitted, X[val_idx])))
                on_look(look_trees, look_ap, seconds + time.perf_counter() - start)
                fitted.set_params(n_estimators=total).fit(X_fit, y_fit)
        else:
            fitted = clone(model).fit(X_fit, y_fit)
        proba = fraud_proba(fitted, X[val_idx])
        fold_ap.append(float(average_precision_score(y_val, proba)))
        fold_roc.append(float(roc_auc_score(y_val, proba)))
        seconds += time.perf_counter() - start
        del fitted  # a deep forest can take hundreds of MB: free it before the next fold
        oof_index.append(val_idx)
        oof_proba.append(proba)
        oof_fold.append(np.full(len(val_idx), k))
        if on_fold is not None:
            on_fold(k, float(np.mean(fold_ap)), seconds)
    single_split_std = float("nan")
    if len(fold_ap) == 1:
        single_split_std = bootstrap_ap_std(data.y[oof_index[0]], oof_proba[0], n_boot=200, seed=0)
    return CVResult(
        fold_pr_auc=fold_ap,
        fold_roc_auc=fold_roc,
        fit_seconds=seconds,
        single_split_std=single_split_std,
        oof_index=np.concatenate(oof_index),
        oof_proba=np.concatenate(oof_proba),
        oof_fold=np.concatenate(oof_fold),
    )


def _row_looks(model: ClassifierMixin, X: np.ndarray, labels: np.ndarray, fit_idx: np.ndarray, val_idx: np.ndarray,
               fractions: Sequence[float], seed: int, scale: bool) -> Iterator[tuple[int, float]]:
    """(rows, AP on the validation fold) of a forest grown on each fraction of the fitting rows (subsample)."""
    for fraction in fractions:
        rows = subsample(labels, fit_idx, fraction, seed)
        fitted = (scaled_to_rows(model, fraction) if scale else clone(model)).fit(X[rows], labels[rows])
        yield len(rows), float(average_precision_score(labels[val_idx], fraud_proba(fitted, X[val_idx])))
        del fitted


def subsample(labels: np.ndarray, fit_idx: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified share of the fitting rows, sorted: each class shuffled with the seed, its first ``fraction``
    taken, so that with one seed a smaller share lies inside a larger one."""
    rng = np.random.default_rng(seed)
    y = labels[fit_idx]
    by_class = [rng.permutation(fit_idx[y == label]) for label in np.unique(y)]
    return np.sort(np.concatenate([idx[:max(1, round(fraction * len(idx)))] for idx in by_class]))


def scaled_to_rows(model: ClassifierMixin, fraction: float) -> ClassifierMixin:
    """The forest to grow on ``fraction`` of the rows so that its trees keep their shape: leaf and split sizes
    (counts of rows) scaled by the fraction, at least 1 and 2. Unscaled, a leaf of 60 rows on a ninth of the rows
    is a far coarser tree than on all of them: on the real data such looks did not rank the wide space's
    configurations (Spearman -0.27 with fold 1 at 1/9 of the rows), scaled they did (+0.77; BENCHMARKS.md)."""
    params, sizes = model.get_params(), {"min_samples_leaf": 1, "min_samples_split": 2}
    return clone(model).set_params(**{key: max(least, round(params[key] * fraction))
                                      for key, least in sizes.items() if isinstance(params.get(key), int)})


@dataclass
class TestResult:
    pr_auc: float
    roc_auc: float
    pr_auc_ci_low: float
    pr_auc_ci_high: float
    fit_seconds: float
    proba: np.ndarray = field(repr=False)


def fit_and_test(model: ClassifierMixin, data: Dataset, split: Split, n_boot: int, seed: int,
                 X: Optional[np.ndarray] = None, names: Optional[Sequence[str]] = None) -> tuple[
    ClassifierMixin, TestResult
]:
    """Refit on the whole training split, then score the held-out test split once. ``X`` and ``names``: the
    forest's inputs and their names (src.model.inputs), the data's own columns by default."""
    X = data.X if X is None else X
    columns = list(names) if names is not None else FEATURES
    start = time.perf_counter()
    # Fitted on named columns, so that scikit-learn checks them when the model scores (and does not warn).
    fitted = clone(model).fit(pd.DataFrame(X[split.train], columns=columns), data.y[split.train])
    seconds = time.perf_counter() - start
    proba = fraud_proba(fitted, pd.DataFrame(X[split.test], columns=columns))
    y_test = data.y[split.test]
    low, high = bootstrap_ap_interval(y_test, proba, n_boot=n_boot, seed=seed)
    return fitted, TestResult(
        pr_auc=float(average_precision_score(y_test, proba)),
        roc_auc=float(roc_auc_score(y_test, proba)),
        pr_auc_ci_low=low,
        pr_auc_ci_high=high,
        fit_seconds=seconds,
        proba=proba,
    )


# The bootstrap of an average precision, as resampling counts: a resample of the rows with replacement is a vector of
# counts (how often each row was drawn), and a row drawn k times weighs k in the precision-recall curve. The rows are
# sorted once, not once per resample (scipy.stats.bootstrap hands over resampled arrays, each to be sorted again),
# and every model of a comparison is scored on the same counts: ~25 times faster on 57k test rows, the same
# statistic (tests: equal to scikit-learn's average_precision_score with sample_weight).
BOOTSTRAP_BATCH = 50  # resamples at a time: 50 x 57k counts are ~23 MB


def resample_counts(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """(batch, n) arrays of counts, one row per bootstrap resample of n rows drawn with replacement."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_boot, BOOTSTRAP_BATCH):
        b = min(BOOTSTRAP_BATCH, n_boot - start)
        draws = rng.integers(0, n, size=(b, n)) + (np.arange(b) * n)[:, None]
        yield np.bincount(draws.ravel(), minlength=b * n).reshape(b, n)


def weighted_ap(y: np.ndarray, proba: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The average precision of each resample (rows weighted by ``counts``): scikit-learn's step-wise definition,
    sum over distinct thresholds of (recall gained) x precision. A resample without a fraud scores 0 (only on tiny
    test sets: it widens the interval rather than hiding the problem)."""
    order = np.argsort(-np.asarray(proba), kind="mergesort")
    p, fraud = np.asarray(proba)[order], np.asarray(y)[order] == 1
    ends = np.r_[np.flatnonzero(np.diff(p) != 0), len(p) - 1]  # a group of equal scores is one threshold
    frauds = np.flatnonzero(fraud)
    # only thresholds whose group holds a fraud gain recall: the curve is read there, with the frauds' own counts
    group_of_fraud = np.searchsorted(ends, frauds)
    kept = np.unique(group_of_fraud)
    w = counts[:, order]
    tp_at = np.cumsum(w[:, frauds], axis=1)[:, np.searchsorted(frauds, ends[kept], side="right") - 1]
    flagged = np.cumsum(w, axis=1, dtype=np.int64)[:, ends[kept]]
    total = tp_at[:, -1:] if len(kept) else np.zeros((len(counts), 1))
    precision = np.divide(tp_at, flagged, out=np.zeros(tp_at.shape), where=flagged > 0)
    gained = np.diff(tp_at, axis=1, prepend=0) / np.where(total > 0, total, 1)
    return np.where(total[:, 0] > 0, (gained * precision).sum(axis=1), 0.0)


def bootstrap_aps(y: np.ndarray, probas: Sequence[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Each model's bootstrap distribution of average precision, every model on the same resamples (paired)."""
    found: list[list[np.ndarray]] = [[] for _ in probas]
    for counts in resample_counts(len(y), n_boot, seed):
        for k, proba in enumerate(probas):
            found[k].append(weighted_ap(y, proba, counts))
    return [np.concatenate(f) for f in found]


def bootstrap_ap_std(y: np.ndarray, proba: np.ndarray, n_boot: int, seed: int) -> float:
    (aps,) = bootstrap_aps(y, [proba], n_boot, seed)
    return float(np.std(aps, ddof=1))


def bootstrap_ap_interval(y: np.ndarray, proba: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[
    float, float
]:
    """Percentile bootstrap interval of the test average precision (rows resampled with replacement)."""
    (aps,) = bootstrap_aps(y, [proba], n_boot, seed)
    low, high = np.quantile(aps, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


@dataclass
class PairedComparison:
    challenger_ap: float
    champion_ap: float
    diff: float
    diff_lower: float  # one-sided lower confidence bound of challenger AP - champion AP


def paired_bootstrap(y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, n_boot: int, seed: int,
                     confidence: float) -> PairedComparison:
    """Both models scored on the same resampled rows: the difference's one-sided lower bound at ``confidence``
    (percentile)."""
    chal_aps, champ_aps = bootstrap_aps(y, [challenger, champion], n_boot, seed)
    chal, champ = float(average_precision_score(y, challenger)), float(average_precision_score(y, champion))
    return PairedComparison(chal, champ, chal - champ, float(np.quantile(chal_aps - champ_aps, 1 - confidence)))


@dataclass(frozen=True)
class PairedInterval:
    diff: float  # mean over folds of (this model minus the reference), on the same rows
    low: float  # two-sided 95 % percentile bootstrap interval
    high: float

    @property
    def better(self) -> bool:
        """Better with confidence: the whole interval above 0."""
        return self.low > 0


def paired_over_folds(y: np.ndarray, fold_of: np.ndarray, mine: np.ndarray, reference: np.ndarray, n_boot: int,
                      seed: int, gains: Optional[tuple[np.ndarray, np.ndarray]] = None) -> PairedInterval:
    """Two models' out-of-fold predictions on the same rows and folds: the mean over folds of the difference in
    average precision (or, with ``gains``, in net gain per fold: the rows' gains of each), with a paired bootstrap
    that resamples the rows within each fold (the folds' own difficulty is shared, so it cancels)."""
    diffs = np.zeros(n_boot)
    point = []
    folds = np.unique(fold_of)
    for k in folds:
        rows = np.flatnonzero(fold_of == k)
        if gains is None:
            a, b = bootstrap_aps(y[rows], [mine[rows], reference[rows]], n_boot, seed + int(k))
            point.append(float(average_precision_score(y[rows], mine[rows]))
                         - float(average_precision_score(y[rows], reference[rows])))
            diffs += a - b
        else:
            d = gains[0][rows] - gains[1][rows]
            point.append(float(d.sum()))
            sums = np.concatenate([counts @ d for counts in resample_counts(len(rows), n_boot, seed + int(k))])
            diffs += sums
    diffs /= len(folds)
    low, high = np.quantile(diffs, [0.025, 0.975])
    return PairedInterval(float(np.mean(point)), float(low), float(high))
