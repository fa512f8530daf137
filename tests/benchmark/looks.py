"""How well a look at a share of fold 1's rows ranks configurations of the wide space, as the forest is grown there
now and with its leaf and split sizes scaled to the share (a leaf of 60 rows on a ninth of the rows is a much
coarser tree than on all of them: scaling keeps the tree's shape).

    python -m tests.benchmark.looks --json looks.json   # the real data: about ten minutes on 2 cores
    python -m tests.benchmark.looks --small             # small synthetic data, seconds

``n`` configurations drawn at random from peer.WIDE (seeded), each with ``--trees`` trees (the tree count is
not what the looks mis-rank); for each: AP on fold 1's validation rows of a forest grown on 1/9 and 1/3 of fold 1's
fitting rows (the study's own nested stratified subsamples), as is and scaled, and of the forest grown on all of
them (fold 1's value, whose rank correlation with the final objective was +0.98 in the peer benchmark). Reported:
Spearman's rank correlation of each look with fold 1, and the seconds each look cost.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tests.benchmark.speed import _composed

SHARES = (0.1111, 0.3333)


def draw(n: int, seed: int) -> list[dict]:
    """``n`` configurations of the wide space (peer.WIDE), uniformly at random."""
    rng = np.random.default_rng(seed)
    depths = [2, 3, 4, 6, 8, 12, 16, 24, None]
    return [{"max_depth": depths[rng.integers(len(depths))], "min_samples_split": int(rng.integers(2, 101)),
             "min_samples_leaf": int(rng.integers(1, 101))} for _ in range(n)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--n", type=int, default=15)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from scipy import stats
    from sklearn.base import clone
    from sklearn.metrics import average_precision_score

    from src.jobs.prepared import inputs_of
    from src.model.evaluation import fraud_proba, scaled_to_rows, subsample
    from src.model.forest import build_model

    data_args = ["dataset=synthetic", "dataset.n_rows=6000", "dataset.fraud_rate=0.03"] if args.small else []
    n, trees = (4, 10) if args.small else (args.n, args.trees)
    cfg, data, parts = _composed(data_args)
    X = inputs_of(cfg, data)
    fit_idx, val_idx = parts.folds[0]
    y_val = data.y[val_idx]
    rows = []
    for params in draw(n, args.seed):
        model_cfg = copy.deepcopy(cfg.model)
        model_cfg.n_estimators, model_cfg.max_depth = trees, params["max_depth"]
        model_cfg.min_samples_split = params["min_samples_split"]
        model_cfg.min_samples_leaf = params["min_samples_leaf"]
        model = build_model(model_cfg)
        row = {"params": params}
        for share in SHARES:
            sub = subsample(data.y, fit_idx, share, cfg.split.seed)
            for kind, looked in (("as_is", model), ("scaled", scaled_to_rows(model, share))):
                start = time.perf_counter()
                fitted = clone(looked).fit(X[sub], data.y[sub])
                row[f"{share}:{kind}"] = float(average_precision_score(y_val, fraud_proba(fitted, X[val_idx])))
                row[f"{share}:{kind}:seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        fitted = clone(model).fit(X[fit_idx], data.y[fit_idx])
        row["fold 1"] = float(average_precision_score(y_val, fraud_proba(fitted, X[val_idx])))
        row["fold 1:seconds"] = time.perf_counter() - start
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    fold1 = [r["fold 1"] for r in rows]
    summary = {}
    for share in SHARES:
        for kind in ("as_is", "scaled"):
            looks = [r[f"{share}:{kind}"] for r in rows]
            rho = stats.spearmanr(looks, fold1).statistic
            summary[f"{share}:{kind}"] = {"spearman_with_fold_1": None if rho != rho else float(rho),
                                          "seconds": sum(r[f"{share}:{kind}:seconds"] for r in rows)}
    result = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "small": args.small, "n": n, "trees": trees,
              "command": " ".join(["python -m tests.benchmark.looks", *sys.argv[1:]]),
              "fold_1_seconds": sum(r["fold 1:seconds"] for r in rows), "summary": summary, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    print(f"{n} configurations of the wide space, {trees} trees each; fold 1 took {result['fold_1_seconds']:.0f} s")
    print("| look | Spearman with fold 1 | seconds |\n|---|---|---|")
    for key, value in summary.items():
        share, kind = key.split(":")
        rho = "n/a" if value["spearman_with_fold_1"] is None else f"{value['spearman_with_fold_1']:+.2f}"
        print(f"| {share} of the rows, {kind.replace('_', ' ')} | {rho} | {value['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
