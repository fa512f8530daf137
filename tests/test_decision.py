"""The decision layer's pure parts, in-process: the cost model, the exact threshold search, cross-fitting, the
forest's inputs (time of day), the refusal of rows that cannot be scored, and the gate's rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from src.config import DecisionConfig
from src.data.schema import FEATURES
from src.lifecycle.gate import Comparison, Evidence, Verdict, decide
from src.lifecycle.ledger import Rule
from src.model.decision import (
    GRID,
    Operating,
    Payoffs,
    cross_fitted,
    gain_curve,
    halves,
    net_gain,
    out_of_fold,
)
from src.model.inputs import InputError, check_rows, derive, feature_names


def sample(n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.03).astype(int)
    amount = np.round(rng.gamma(0.8, 90.0, n), 2)
    proba = np.clip(rng.beta(1, 9, n) + 0.6 * y * rng.random(n), 0, 1).round(2)  # ties, as a forest's are
    return y, amount, proba


def anchor_business_metric(y, flagged, amount):
    """scikit-learn's example, written out independently: +50 a fraud stopped, -5 a false alarm, -Amount a fraud
    let through, +2 % of the Amount a legitimate transaction let through."""
    tp, tn = (y == 1) & flagged, (y == 0) & ~flagged
    fp, fn = (y == 0) & flagged, (y == 1) & ~flagged
    return tp.sum() * 50 - amount[fn].sum() - fp.sum() * 5 + (amount[tn] * 0.02).sum()


def test_the_default_cost_model_is_the_anchors_business_metric():
    y, amount, proba = sample()
    payoffs = Payoffs.of(DecisionConfig(), y, amount)
    for threshold in (0.0, 0.1, 0.35, 0.5, 0.9, 1.0):
        assert net_gain(payoffs, proba, threshold) == pytest.approx(anchor_business_metric(y, proba >= threshold,
                                                                                            amount))


def test_the_threshold_search_is_exact_and_breaks_ties_towards_fewer_alerts():
    y, amount, proba = sample(seed=1)
    payoffs = Payoffs.of(DecisionConfig(), y, amount)
    curve = gain_curve(payoffs, proba)
    brute = [net_gain(payoffs, proba, t) for t in curve.thresholds]
    assert np.allclose(curve.gains, brute)
    everywhere = np.unique(np.r_[proba, GRID, (proba[:-1] + proba[1:]) / 2])
    assert curve.best()[1] == pytest.approx(max(net_gain(payoffs, proba, t) for t in everywhere))
    assert np.allclose(curve.at(GRID), [net_gain(payoffs, proba, t) for t in GRID])
    # a flat stretch: the highest threshold of the best gains is chosen
    flat = Payoffs(np.array([5.0, 0.0, 0.0]), np.array([0.0, 0.0, 0.0]))
    t, g = gain_curve(flat, np.array([0.9, 0.5, 0.2])).best()
    assert g == 5.0 and 0.5 < t < 0.9


def test_cross_fitting_never_lets_a_fold_choose_its_own_threshold():
    """Permute the labels inside fold 0: the threshold fold 0 is scored at does not move (it was chosen on the other
    folds), while the other folds' thresholds may."""
    y, amount, proba = sample(seed=2)
    fold_of = np.arange(len(y)) % 3
    payoffs = Payoffs.of(DecisionConfig(), y, amount)
    before = cross_fitted(payoffs, proba, fold_of)
    rng = np.random.default_rng(0)
    inside = np.flatnonzero(fold_of == 0)
    y2 = y.copy()
    y2[inside] = rng.permutation(y[inside] ^ (rng.random(len(inside)) < 0.05))
    after = cross_fitted(Payoffs.of(DecisionConfig(), y2, amount), proba, fold_of)
    assert after.fold_thresholds[0] == before.fold_thresholds[0]
    assert after.fold_gains[0] != before.fold_gains[0]  # its own score did use its own (new) labels


def test_a_pinned_threshold_is_used_as_it_is_and_one_fold_is_cross_fitted_in_two_halves():
    y, amount, proba = sample(seed=3)
    pinned = out_of_fold(DecisionConfig(threshold=0.42), y, proba, amount, np.arange(len(y)) % 3)
    assert pinned.pinned and pinned.threshold == 0.42 and pinned.cross.fold_thresholds == [0.42] * 3
    fold_of = halves(y, seed=0)
    assert set(fold_of) == {0, 1} and abs(y[fold_of == 0].sum() - y[fold_of == 1].sum()) <= 1
    assert len(out_of_fold(DecisionConfig(), y, proba, amount, fold_of).cross.fold_gains) == 2


def test_operating_point_numbers():
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 1])
    proba = np.array([0.9, 0.2, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.7])
    op = Operating.of(Payoffs.of(DecisionConfig(), y, np.full(10, 100.0)), y, proba, 0.5)
    assert (op.recall, op.precision, op.alerts_per_1000) == (pytest.approx(2 / 3), pytest.approx(2 / 3), 300.0)
    assert op.net_gain == pytest.approx(2 * 50 - 5 - 100 + 6 * 2)


def test_time_of_day_means_the_same_tomorrow_and_raw_time_does_not():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, len(FEATURES)))
    X[:, 0] = rng.uniform(0, 172_800, 50)
    later = X.copy()
    later[:, 0] += 3 * 86_400
    assert np.array_equal(derive(X, FEATURES, "time_of_day"), derive(later, FEATURES, "time_of_day"))
    assert not np.array_equal(derive(X, FEATURES, "raw"), derive(later, FEATURES, "raw"))
    assert derive(X, FEATURES, "drop").shape[1] == len(FEATURES) - 1
    assert feature_names(FEATURES, "time_of_day")[0] == "time_of_day" and feature_names(FEATURES, "drop")[0] == "V1"


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns=["Amount"]), "column Amount is missing"),
    (lambda f: f.assign(Amount=[1.0, -2.0, 3.0]), "column Amount is negative (-2) in row 2"),
    (lambda f: f.assign(V3=[1.0, np.nan, 3.0]), "column V3 is missing (NaN or null) in row 2"),
    (lambda f: f.assign(Time=[1.0, 2.0, np.inf]), "column Time is infinite in row 3"),
])
def test_rows_that_cannot_be_scored_are_refused_in_one_line_naming_the_column(change, message):
    frame = pd.DataFrame(np.ones((3, len(FEATURES))), columns=FEATURES)
    with pytest.raises(InputError) as info:
        check_rows(change(frame), FEATURES)
    assert message in str(info.value) and "\n" not in str(info.value)


RULE = Rule(criterion="pr_auc", confidence=0.95, margin=0.0, max_test_uses=3)
BASE = {"challenger_ap": 0.84, "challenger_gain": 1000.0, "uses": 2, "n_rows": 5000}
COMPARED = {**BASE, "champion_version": "1", "champion_ap": 0.80, "champion_recorded_ap": 0.80,
            "champion_gain": 1200.0}


def test_the_gate_rule_judges_the_criterion_of_the_lineage():
    """AP better with confidence, money worse with confidence: pr_auc promotes, net_gain keeps the champion."""
    e = Evidence(**COMPARED, comparison=Comparison(ap_diff=0.04, ap_lower=0.01, gain_diff=-200.0, gain_lower=-350.0))
    assert decide(e, RULE, "draw a fresh split").verdict == Verdict.PROMOTED
    by_money = decide(e, Rule(criterion="net_gain", confidence=0.95, margin=0.0, max_test_uses=3), "")
    assert by_money.verdict == Verdict.KEPT
    assert "AP difference +0.0400" in by_money.reason and "net gain difference -200" in by_money.reason


def test_the_gate_rule_fails_closed_and_keeps_its_budget():
    better = Comparison(ap_diff=0.04, ap_lower=0.01, gain_diff=200.0, gain_lower=50.0)
    assert decide(Evidence(**BASE, unavailable="registry down"), RULE, "").verdict == Verdict.UNDECIDED
    assert decide(Evidence(**BASE), RULE, "").verdict == Verdict.PROMOTED  # no champion yet
    spent = {**BASE, "uses": 4}
    assert decide(Evidence(**spent), RULE, "").verdict == Verdict.KEPT  # a spent lineage promotes nothing by itself
    assert decide(Evidence(**{**COMPARED, "uses": 4}, comparison=better), RULE, "").verdict == Verdict.KEPT
    other = Evidence(**BASE, champion_version="1", lineage_differences=("test rows aa vs bb",))
    assert decide(other, RULE, "").verdict == Verdict.KEPT
    moved = Evidence(**{**COMPARED, "champion_recorded_ap": 0.79}, comparison=better)
    assert decide(moved, RULE, "").verdict == Verdict.UNDECIDED and "not its recorded" in decide(moved, RULE, "").reason
