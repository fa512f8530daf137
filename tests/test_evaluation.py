"""Scoring on known predictions; cross-validation never sees the test rows; refits are reproducible."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin

from src.config import EvaluationConfig, RandomForestConfig, SplitConfig, SyntheticDatasetConfig
from src.data.loading import load
from src.data.split import split
from src.model.evaluation import bootstrap_ap_interval, cross_validate, fit_and_test, paired_bootstrap
from src.model.forest import build_model, forest_key, hyperparameters


class Recorder(BaseEstimator, ClassifierMixin):
    """Scores rows by one feature and remembers which rows it was fitted on."""

    seen: list = []
    seen_y: list = []

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        Recorder.seen.append(np.asarray(X).copy())
        Recorder.seen_y.append(np.asarray(y).copy())
        return self

    def predict_proba(self, X):
        score = 1 / (1 + np.exp(np.asarray(X)[:, 14]))  # low V14 = fraud, as in the real data
        return np.column_stack([1 - score, score])


@pytest.fixture(scope="module")
def small():
    ds = load(SyntheticDatasetConfig(n_rows=6000, fraud_rate=0.02, seed=0))
    return ds, split(ds, SplitConfig(test_size=0.2, seed=0), EvaluationConfig(cv_folds=3))


def test_cv_fits_only_training_rows_and_reports_each_fold(small):
    ds, parts = small
    Recorder.seen = []
    calls = []
    result = cross_validate(Recorder(), ds, parts, on_fold=lambda k, mean, secs: calls.append((k, mean, secs)))
    test_rows = {tuple(r) for r in ds.X[parts.test]}
    assert len(Recorder.seen) == 3
    for fitted in Recorder.seen:
        assert not test_rows & {tuple(r) for r in fitted}
    assert [k for k, _, _ in calls] == [0, 1, 2]
    assert calls[-1][1] == pytest.approx(result.pr_auc)
    assert calls[0][2] <= calls[-1][2] == pytest.approx(result.fit_seconds)
    assert 0.3 < result.pr_auc < 1.0 and result.pr_auc_std > 0
    assert sorted(result.oof_index) == sorted(parts.train)  # every training row scored once, out of fold


def test_cv_stops_when_the_callback_raises(small):
    ds, parts = small

    class Stop(Exception):
        pass

    def stop_after_first(k, mean, seconds):
        raise Stop

    with pytest.raises(Stop):
        cross_validate(Recorder(), ds, parts, on_fold=stop_after_first)


def test_first_look_scores_a_smaller_forest_and_grows_the_same_one(small):
    ds, parts = small
    model = build_model(RandomForestConfig(n_estimators=12, max_depth=6, n_jobs=1))
    looks = []
    plain = cross_validate(model, ds, parts)
    grown = cross_validate(model, ds, parts, look_trees=4, on_look=lambda *args: looks.append(args))
    assert grown.fold_pr_auc == plain.fold_pr_auc  # warm_start grows exactly the trees of a one-shot fit
    np.testing.assert_array_equal(grown.oof_proba, plain.oof_proba)
    ((trees, ap, seconds),) = looks  # once, on the first fold
    assert trees == 4 and 0 < ap < 1 and ap != grown.fold_pr_auc[0] and 0 < seconds < grown.fit_seconds
    assert cross_validate(build_model(RandomForestConfig(n_estimators=4, n_jobs=1)), ds, parts, look_trees=4,
                          on_look=lambda *args: looks.append(args)) and len(looks) == 1  # nothing to look at


def test_first_look_can_stop_the_fit(small):
    ds, parts = small

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    with pytest.raises(Stop):
        cross_validate(build_model(RandomForestConfig(n_estimators=12, n_jobs=1)), ds, parts, look_trees=4,
                       on_look=stop)


def test_row_looks_fit_nested_stratified_fractions_of_fold_one_and_leave_the_folds_alone(small):
    ds, parts = small
    model = build_model(RandomForestConfig(n_estimators=8, max_depth=6, n_jobs=1))
    looks = []
    plain = cross_validate(model, ds, parts)
    looked = cross_validate(model, ds, parts, row_looks=[0.1, 0.4], on_rows=lambda *a: looks.append(a), seed=3)
    assert looked.fold_pr_auc == plain.fold_pr_auc  # the looks are extra fits: the folds' results do not change
    fit_idx, _ = parts.folds[0]
    assert [i for i, *_ in looks] == [0, 1]
    assert [rows for _, rows, *_ in looks] == pytest.approx([0.1 * len(fit_idx), 0.4 * len(fit_idx)], abs=2)
    assert all(0 < ap <= 1 for *_, ap, _ in looks) and looks[0][3] < looks[1][3] < looked.fit_seconds

    Recorder.seen.clear()
    Recorder.seen_y.clear()
    cross_validate(Recorder(), ds, parts, row_looks=[0.1, 0.4], on_rows=lambda *a: None, seed=3)
    small_rows, large_rows = (set(map(bytes, x)) for x in Recorder.seen[:2])
    assert small_rows < large_rows  # each look's rows lie inside the next one's
    frauds = ds.y[fit_idx].sum()
    for y, fraction in zip(Recorder.seen_y[:2], (0.1, 0.4), strict=True):  # stratified: that share of the frauds
        assert y.sum() == round(fraction * frauds)


class SizeRecorder(Recorder):
    """A Recorder with a forest's leaf and split sizes: remembers the sizes of every fit."""

    sizes: list = []

    def __init__(self, min_samples_leaf=1, min_samples_split=2):
        self.min_samples_leaf, self.min_samples_split = min_samples_leaf, min_samples_split

    def fit(self, X, y):
        SizeRecorder.sizes.append((self.min_samples_leaf, self.min_samples_split))
        return super().fit(X, y)


def test_a_row_look_grows_trees_of_the_same_shape_leaves_and_splits_scaled_to_its_share(small):
    """With scale_looks: a leaf of 60 rows on a ninth of the rows is a far coarser tree than on all of them: on the
    real data the looks ranked the wide space's configurations only once scaled (BENCHMARKS.md). The folds keep
    their sizes."""
    ds, parts = small
    SizeRecorder.sizes.clear()
    cross_validate(SizeRecorder(60, 90), ds, parts, row_looks=[0.1111, 0.3333], on_rows=lambda *a: None,
                   scale_looks=True)
    assert SizeRecorder.sizes == [(7, 10), (20, 30), (60, 90), (60, 90), (60, 90)]
    SizeRecorder.sizes.clear()
    cross_validate(SizeRecorder(3, 4), ds, parts, row_looks=[0.1111], on_rows=lambda *a: None, scale_looks=True)
    assert SizeRecorder.sizes[0] == (1, 2)  # never below a forest's own minimums
    SizeRecorder.sizes.clear()
    cross_validate(SizeRecorder(60, 90), ds, parts, row_looks=[0.1111], on_rows=lambda *a: None)
    assert SizeRecorder.sizes == [(60, 90)] * 4  # the default: the trial's own sizes on the look's rows


def test_a_row_look_can_stop_the_fit_before_fold_one_is_grown(small):
    ds, parts = small

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    Recorder.seen.clear()
    with pytest.raises(Stop):
        cross_validate(Recorder(), ds, parts, row_looks=[0.1], on_rows=stop)
    assert len(Recorder.seen) == 1  # the look's fit only


def test_single_validation_split_still_reports_uncertainty():
    ds = load(SyntheticDatasetConfig(n_rows=6000, fraud_rate=0.02, seed=0))
    parts = split(ds, SplitConfig(), EvaluationConfig(cv_folds=1))
    result = cross_validate(Recorder(), ds, parts)
    assert len(result.fold_pr_auc) == 1 and 0 < result.pr_auc_std < 0.2


def test_bootstrap_interval_on_known_predictions():
    y = np.array([0] * 90 + [1] * 10)
    perfect = y.astype(float)
    low, high = bootstrap_ap_interval(y, perfect, n_boot=200, seed=0)
    assert low == high == 1.0
    rng = np.random.default_rng(0)
    noisy = y + rng.normal(0, 0.6, size=y.size)
    low, high = bootstrap_ap_interval(y, noisy, n_boot=300, seed=0)
    assert 0 < low < high < 1


def test_paired_bootstrap_sees_a_better_model_and_not_an_equal_one():
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.05).astype(int)
    good = y + rng.normal(0, 0.3, size=y.size)
    poor = y + rng.normal(0, 1.5, size=y.size)
    better = paired_bootstrap(y, good, poor, n_boot=300, seed=0, confidence=0.95)
    assert better.diff > 0.2 and better.diff_lower > 0.1
    same = paired_bootstrap(y, good, good.copy(), n_boot=300, seed=0, confidence=0.95)
    assert same.diff == 0 and same.diff_lower <= 0
    worse = paired_bootstrap(y, poor, good, n_boot=300, seed=0, confidence=0.95)
    assert worse.diff_lower < 0


def test_refit_is_reproducible(small):
    ds, parts = small
    model = build_model(RandomForestConfig(n_estimators=5, max_depth=6, n_jobs=2))
    fa, a = fit_and_test(model, ds, parts, n_boot=100, seed=0)
    fb, b = fit_and_test(model, ds, parts, n_boot=100, seed=0)
    for ta, tb in zip(fa.estimators_, fb.estimators_, strict=True):  # the same trees, split for split
        np.testing.assert_array_equal(ta.tree_.feature, tb.tree_.feature)
        np.testing.assert_array_equal(ta.tree_.threshold, tb.tree_.threshold)
    # Threads may sum the trees in another order: equal up to rounding.
    np.testing.assert_allclose(a.proba, b.proba, rtol=0, atol=1e-12)
    assert a.pr_auc_ci_low <= a.pr_auc <= a.pr_auc_ci_high


def test_logged_hyperparameters_use_bare_names():
    params = hyperparameters(RandomForestConfig(max_depth="none"))
    assert params == {"n_estimators": 100, "max_depth": "none", "min_samples_split": 2, "min_samples_leaf": 1,
                      "class_weight": "balanced"}


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"min_samples_split": 2, "min_samples_leaf": 2}, {"min_samples_split": 4, "min_samples_leaf": 2}, True),
        ({"min_samples_split": 3, "min_samples_leaf": 2}, {"min_samples_split": 4, "min_samples_leaf": 2}, True),
        ({"min_samples_split": 5, "min_samples_leaf": 2}, {"min_samples_split": 4, "min_samples_leaf": 2}, False),
        ({"min_samples_split": 2, "min_samples_leaf": 1}, {"min_samples_split": 2, "min_samples_leaf": 2}, False),
        ({"max_depth": "none"}, {"max_depth": None}, True),
        ({"max_depth": 8}, {"max_depth": None}, False),
        ({"n_jobs": 1}, {"n_jobs": -1}, True),
        ({"n_estimators": 5}, {"n_estimators": 6}, False),
        ({"random_state": 1}, {"random_state": 2}, False),
        ({"class_weight": None}, {"class_weight": "balanced"}, False),
    ],
)
def test_forest_key_is_equal_exactly_for_settings_that_grow_the_same_trees(a, b, same):
    assert (forest_key(RandomForestConfig(**a)) == forest_key(RandomForestConfig(**b))) is same


def test_equal_forest_keys_grow_the_same_trees(small):
    ds, parts = small
    split_2, split_4, split_5 = (cross_validate(build_model(RandomForestConfig(
        n_estimators=6, min_samples_split=s, min_samples_leaf=2, n_jobs=1)), ds, parts) for s in (2, 4, 5))
    np.testing.assert_array_equal(split_2.oof_proba, split_4.oof_proba)
    assert split_2.fold_pr_auc == split_4.fold_pr_auc
    assert not np.array_equal(split_5.oof_proba, split_4.oof_proba)  # split 5 > 2 * leaf: other trees


def test_the_bootstrap_by_counts_is_scikit_learns_average_precision_with_weights():
    """Each resample's AP, computed once-sorted from resampling counts, equals average_precision_score with the counts
    as sample weights (ties, a resample without a fraud: 0)."""
    from sklearn.metrics import average_precision_score

    from src.model.evaluation import resample_counts, weighted_ap

    rng = np.random.default_rng(3)
    for n, rate in ((3000, 0.01), (60, 0.05)):
        y = (rng.random(n) < rate).astype(int)
        proba = np.clip(rng.beta(1, 12, n) + 0.5 * y * rng.random(n), 0, 1).round(2)
        counts = next(resample_counts(n, 40, seed=1))
        expected = [average_precision_score(y, proba, sample_weight=c) if (c * y).sum() else 0.0 for c in counts]
        assert np.allclose(weighted_ap(y, proba, counts), expected, atol=1e-12)
