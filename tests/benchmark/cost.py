"""Money against the anchor, in one run: scikit-learn's example "Post-tuning the decision threshold for
cost-sensitive learning" on the Kaggle file, with its protocol and payoff, beside our pipeline.

    python -m tests.benchmark.cost --json cost.json   # the real file (data/creditcard.csv): about 20 minutes on 2 cores
    python -m tests.benchmark.cost --small            # synthetic rows in a minute or two (the suite runs it)

The protocol is the anchor's: the whole file (duplicates included), a stratified 50/50 split with
``random_state=42``, and its business metric per transaction (+50 a fraud stopped, -5 a false alarm, -Amount a fraud
let through, +2 % of the Amount a legitimate transaction let through: conf/decision/anchor.yaml). On the test half:
- flag nothing;
- the anchor's scaled ``LogisticRegression`` (``C`` tuned by ``GridSearchCV`` on the log loss) at 0.5, and with
  ``TunedThresholdClassifierCV`` on the business metric (the anchor publishes 244,920 and 249,433);
- a ``RandomForestClassifier`` with our configured settings and ``TunedThresholdClassifierCV``;
- our pipeline: the default study (``python -m src.train --multirun``) on the training half, its best configuration
  refitted on the whole training half and used at its trial's threshold (chosen on out-of-fold predictions).
Each with a 95 % bootstrap interval over the test rows, and ours against each peer as a paired bootstrap of the
difference (same resampled rows): where that interval holds 0, it is a tie.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tests.benchmark.speed import ROOT

ANCHOR = {"logistic_regression_0.5": 244_920.0, "logistic_regression_tuned": 249_433.0}  # published figures


def load_file(small: bool) -> pd.DataFrame:
    if small:
        from src.data.synthetic import generate

        return generate(20_000, 0.01, 0)
    from src.data.fetch import fetch

    return pd.read_csv(fetch(ROOT / "data" / "creditcard.csv"))


def business(y: np.ndarray, flagged: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """The anchor's payoff per row (the same numbers as conf/decision/anchor.yaml, written out for the peers)."""
    return np.where(y == 1, np.where(flagged, 50.0, -amount), np.where(flagged, -5.0, 0.02 * amount))


def interval(rows: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    from src.model.decision import gain_interval

    return gain_interval(rows, n_boot, seed)


def paired(ours: np.ndarray, peer: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Our net gain minus the peer's, with a two-sided 95 % paired bootstrap interval."""
    from scipy import stats

    diff = ours - peer
    res = stats.bootstrap((diff,), np.sum, vectorized=True, n_resamples=n_boot, batch=100, method="percentile",
                          rng=np.random.default_rng(seed))
    return float(diff.sum()), float(res.confidence_interval.low), float(res.confidence_interval.high)


def peers(X_train, y_train, a_train, X_test, small: bool) -> dict[str, tuple[np.ndarray, float, float]]:
    """Each peer's flags on the test half (and its threshold, its fit seconds)."""
    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import make_scorer
    from sklearn.model_selection import GridSearchCV, TunedThresholdClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from src.config import RandomForestConfig
    from src.model.forest import build_model

    sklearn.set_config(enable_metadata_routing=True)

    def metric(y_true, y_pred, amount):
        return business(np.asarray(y_true), np.asarray(y_pred) == 1, np.asarray(amount)).sum()

    scorer = make_scorer(metric).set_score_request(amount=True)
    out: dict[str, tuple[np.ndarray, float, float]] = {"flag_nothing": (np.zeros(len(X_test), bool), 1.0, 0.0)}
    start = time.perf_counter()
    lr = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                      {"logisticregression__C": np.logspace(-6, 6, 13)}, scoring="neg_log_loss").fit(X_train, y_train)
    out["logistic_regression_0.5"] = (lr.predict(X_test) == 1, 0.5, time.perf_counter() - start)
    start = time.perf_counter()
    tuned = TunedThresholdClassifierCV(lr.best_estimator_, scoring=scorer, thresholds=100, n_jobs=2)
    tuned.fit(X_train, y_train, amount=a_train)
    out["logistic_regression_tuned"] = (tuned.predict(X_test) == 1, float(tuned.best_threshold_),
                                        time.perf_counter() - start)
    start = time.perf_counter()
    forest = build_model(RandomForestConfig(n_estimators=20 if small else 200, n_jobs=-1))
    rf = TunedThresholdClassifierCV(forest, scoring=scorer, thresholds=100).fit(X_train, y_train, amount=a_train)
    out["random_forest_tuned"] = (rf.predict(X_test) == 1, float(rf.best_threshold_), time.perf_counter() - start)
    sklearn.set_config(enable_metadata_routing=False)
    return out


def our_pipeline(train: pd.DataFrame, X_test: np.ndarray, small: bool, folder: Path) -> tuple[np.ndarray, float,
                                                                                              float, dict]:
    """The default study on the training half, then its best refitted on all of it, at its trial's threshold."""
    from src.config import RandomForestConfig
    from src.data.schema import FEATURES
    from src.model.forest import build_model
    from src.model.inputs import derive

    csv = folder / "train_half.csv"
    train.to_csv(csv, index=False)
    args = ["--multirun", "dataset=creditcard", f"dataset.path={csv}", "registry.enabled=false",
            "mlflow.log_plots=false", "split.test_size=0.02",  # (the study's own holdout: unused, kept small)
            f"mlflow.tracking_uri=sqlite:///{folder / 'mlflow.db'}",
            f"hydra.sweeper.storage=sqlite:///{folder / 'optuna.db'}", f"hydra.sweep.dir={folder / 'sweep'}"]
    if small:
        args += ["hydra.sweeper.n_trials=4", "model.n_estimators=20"]  # (pinned: never sampled)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "src.train", *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the study failed:\n{done.stderr[-3000:]}")
    results = yaml.safe_load((folder / "sweep" / "optimization_results.yaml").read_text())
    chosen = {**(results["pinned_params"] or {}), **results["best_params"]}
    best = {k.split(".")[-1]: v for k, v in chosen.items() if k.split(".")[0] == "model"}
    best["max_depth"] = None if best.get("max_depth") in ("none", None) else best["max_depth"]
    threshold = float(results["best_returned"]["decision_threshold"])
    model = build_model(RandomForestConfig(**{"n_estimators": 200, **best}))
    X_train = train[FEATURES].to_numpy(np.float64)
    names = ["time_of_day", *FEATURES[1:]]
    model.fit(pd.DataFrame(derive(X_train, FEATURES, "time_of_day"), columns=names), train["Class"].to_numpy())
    proba = model.predict_proba(pd.DataFrame(derive(X_test, FEATURES, "time_of_day"), columns=names))[:, 1]
    info = {"best_trial": results["best_trial_number"], "best_params": results["best_params"],
            "val_net_gain": results["best_returned"].get("val_net_gain"), "study_seconds": round(seconds, 1)}
    return proba >= threshold, threshold, seconds, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmark.cost", description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="synthetic rows, a minute or two")
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)
    from sklearn.model_selection import train_test_split

    from src.data.schema import FEATURES

    frame = load_file(args.small)
    X, y, amount = frame[FEATURES].to_numpy(np.float64), frame["Class"].to_numpy().astype(int), \
        frame["Amount"].to_numpy(np.float64)
    idx_train, idx_test = train_test_split(np.arange(len(y)), stratify=y, test_size=0.5, random_state=42)
    print(f"{len(y):,} rows ({int(y.sum())} frauds); test half {len(idx_test):,} rows ({int(y[idx_test].sum())} "
          f"frauds)", file=sys.stderr)
    flags = peers(frame.iloc[idx_train][FEATURES], y[idx_train], amount[idx_train], frame.iloc[idx_test][FEATURES],
                  args.small)
    with tempfile.TemporaryDirectory() as tmp:
        ours_flags, ours_t, ours_s, info = our_pipeline(frame.iloc[idx_train], X[idx_test], args.small, Path(tmp))
    flags["ours"] = (ours_flags, ours_t, ours_s)
    y_test, a_test = y[idx_test], amount[idx_test]
    rows = {name: business(y_test, f, a_test) for name, (f, _, _) in flags.items()}
    report = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "small": args.small, "rows": len(y),
              "test_rows": len(idx_test), "test_frauds": int(y_test.sum()), "ours": info, "results": {}}
    print(f"\n{'':28} {'net gain':>12}  {'95% interval':>24}  {'threshold':>9}  {'ours minus it [95%]':>34}  "
          f"{'seconds':>7}")
    for name, gains in rows.items():
        low, high = interval(gains)
        diff = paired(rows["ours"], gains) if name != "ours" else None
        verdict = "" if diff is None else ("tie" if diff[1] <= 0 <= diff[2] else ("ours ahead" if diff[1] > 0
                                                                                  else "ours behind"))
        report["results"][name] = {"net_gain": float(gains.sum()), "ci": [low, high], "threshold": flags[name][1],
                                   "seconds": round(flags[name][2], 1),
                                   **({"ours_minus": list(diff), "verdict": verdict} if diff else {}),
                                   **({"published": ANCHOR[name]} if name in ANCHOR and not args.small else {})}
        vs = f"{diff[0]:+12,.0f} [{diff[1]:+,.0f}, {diff[2]:+,.0f}] {verdict}" if diff else ""
        print(f"{name:28} {gains.sum():12,.0f}  [{low:10,.0f}, {high:10,.0f}]  {flags[name][1]:9.4f}  {vs:>34}  "
              f"{flags[name][2]:7.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
