"""What the forest should learn from ``Time``: raw seconds since the file began, the time of day, or nothing.

    python -m tests.benchmark.features --json features.json   # the real data: about 15 minutes on 2 cores
    python -m tests.benchmark.features --small                # small synthetic data, seconds

For each ``features.time`` (raw, time_of_day, drop), the configured model on the same split and folds: 3-fold
cross-validation of the training split (val AP; net gain per fold at the threshold of the other folds; the threshold
chosen on all out-of-fold predictions), then one refit on the training split and one test (AP and net gain at that
threshold, each with its 95 % bootstrap interval). The choice is made on the validation numbers; the test numbers
are shown (three looks at the test split, spent on this one question).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.benchmark.gate import composed

MODES = ("raw", "time_of_day", "drop")


def one(overrides: list[str]) -> dict:
    from src.data.loading import load
    from src.data.split import split
    from src.jobs.prepared import amounts, inputs_of, names_of
    from src.model.decision import Operating, Payoffs, gain_interval, out_of_fold
    from src.model.evaluation import cross_validate, fit_and_test
    from src.model.forest import build_model

    cfg = composed(overrides)
    data = load(cfg.dataset)
    parts = split(data, cfg.split, cfg.evaluation)
    X = inputs_of(cfg, data)
    started = time.perf_counter()
    cv = cross_validate(build_model(cfg.model), data, parts, X=X)
    y_oof = data.y[cv.oof_index]
    money = out_of_fold(cfg.decision, y_oof, cv.oof_proba, amounts(data)[cv.oof_index], cv.oof_fold)
    _, test = fit_and_test(build_model(cfg.model), data, parts, cfg.evaluation.bootstrap_samples,
                           seed=cfg.split.seed, X=X, names=names_of(cfg))
    y_test = data.y[parts.test]
    payoffs = Payoffs.of(cfg.decision, y_test, amounts(data)[parts.test])
    op = Operating.of(payoffs, y_test, test.proba, money.threshold)
    low, high = gain_interval(payoffs.at(test.proba, money.threshold), cfg.evaluation.bootstrap_samples,
                              seed=cfg.split.seed)
    return {"val_pr_auc": cv.pr_auc, "val_pr_auc_std": cv.pr_auc_std, "val_net_gain": money.cross.mean,
            "val_net_gain_std": money.cross.std, "threshold": money.threshold, "test_pr_auc": test.pr_auc,
            "test_pr_auc_ci": [test.pr_auc_ci_low, test.pr_auc_ci_high], "test_net_gain": op.net_gain,
            "test_net_gain_ci": [low, high], "test_rows": int(len(parts.test)), "test_frauds": int(y_test.sum()),
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    base = ["dataset=synthetic", "dataset.n_rows=20000", "dataset.fraud_rate=0.01", "model.n_estimators=20",
            "evaluation.bootstrap_samples=200"] if args.small else []
    report = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "small": args.small,
              "command": " ".join(["python -m tests.benchmark.features", *sys.argv[1:]]), "modes": {}}
    for mode in MODES:
        report["modes"][mode] = row = one([*base, f"features.time={mode}"])
        print(f"{mode}: val AP {row['val_pr_auc']:.4f} ± {row['val_pr_auc_std']:.4f}, val net gain "
              f"{row['val_net_gain']:,.0f} ± {row['val_net_gain_std']:,.0f}; test AP {row['test_pr_auc']:.4f} "
              f"[{row['test_pr_auc_ci'][0]:.4f}, {row['test_pr_auc_ci'][1]:.4f}], test net gain "
              f"{row['test_net_gain']:,.0f} [{row['test_net_gain_ci'][0]:,.0f}, {row['test_net_gain_ci'][1]:,.0f}] "
              f"at {row['threshold']:.4f} ({row['seconds']:.0f} s)", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    print("| features.time | val AP ± std (3 folds) | val net gain ± std per fold | threshold | test AP [95 %] | "
          "test net gain [95 %] |\n|---|---|---|---|---|---|")
    for mode, r in report["modes"].items():
        print(f"| {mode} | {r['val_pr_auc']:.4f} ± {r['val_pr_auc_std']:.4f} | {r['val_net_gain']:,.0f} ± "
              f"{r['val_net_gain_std']:,.0f} | {r['threshold']:.4f} | {r['test_pr_auc']:.4f} "
              f"[{r['test_pr_auc_ci'][0]:.4f}, {r['test_pr_auc_ci'][1]:.4f}] | {r['test_net_gain']:,.0f} "
              f"[{r['test_net_gain_ci'][0]:,.0f}, {r['test_net_gain_ci'][1]:,.0f}] |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
