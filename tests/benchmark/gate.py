"""What the gate guarantees, measured, and what the test split says about later transactions.

    python -m tests.benchmark.gate                 # the real data: about an hour on 2 cores
    python -m tests.benchmark.gate --small         # small synthetic data, seconds (the test suite runs it)

Phases:
- holdout: the default sweep's best configuration (BENCHMARKS.md, run 5: 250 trees, unlimited depth, split 2,
  leaf 2) refitted on the training split and tested once under split.method=random and split.method=time;
- aa: an A/A experiment: the same configuration refitted with other random_states (challengers) against itself
  with random_state=42 (the champion), each decided by the gate's rule (src.lifecycle.gate.compare: one-sided paired
  bootstrap of the AP difference on the same test rows, confidence 0.95, margin 0); the share promoted is the
  gate's false-promotion rate. Then the same challengers against a deliberately weak champion (its power).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.helpers.cli import ROOT

BEST = ["model.n_estimators=250", "model.max_depth=none", "model.min_samples_split=2", "model.min_samples_leaf=2"]
WEAK = ["model.n_estimators=10", "model.max_depth=2"]


def composed(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from src.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=overrides))


def fit_proba(cfg, data, parts) -> tuple:
    from src.model.evaluation import fit_and_test
    from src.model.forest import build_model

    started = time.perf_counter()
    _, test = fit_and_test(build_model(cfg.model), data, parts, cfg.evaluation.bootstrap_samples, seed=cfg.split.seed)
    return test, time.perf_counter() - started


def holdout(data_args: list[str], config: list[str]) -> dict:
    from src.data.loading import load
    from src.data.split import split

    rows = {}
    for method in ("random", "time"):
        cfg = composed([*data_args, *config, f"split.method={method}"])
        data = load(cfg.dataset)
        parts = split(data, cfg.split, cfg.evaluation)
        test, seconds = fit_proba(cfg, data, parts)
        rows[method] = {"test_pr_auc": test.pr_auc, "ci_low": test.pr_auc_ci_low, "ci_high": test.pr_auc_ci_high,
                        "test_roc_auc": test.roc_auc, "test_rows": int(len(parts.test)),
                        "test_frauds": int(data.y[parts.test].sum()), "fit_seconds": seconds}
        print(f"{method}: test AP {test.pr_auc:.4f} [{test.pr_auc_ci_low:.4f}, {test.pr_auc_ci_high:.4f}] on "
              f"{len(parts.test)} rows with {rows[method]['test_frauds']} frauds ({seconds:.0f} s)",
              file=sys.stderr, flush=True)
    return rows


def aa(data_args: list[str], config: list[str], n: int) -> dict:
    from src.data.loading import load
    from src.data.split import split
    from src.lifecycle.gate import compare

    cfg = composed([*data_args, *config])
    data = load(cfg.dataset)
    parts = split(data, cfg.split, cfg.evaluation)
    y = data.y[parts.test]
    champion, _ = fit_proba(cfg, data, parts)
    weak, _ = fit_proba(composed([*data_args, *config, *WEAK]), data, parts)
    rows = []
    for k in range(n):
        seed = 1000 + k
        challenger, seconds = fit_proba(composed([*data_args, *config, f"model.random_state={seed}"]), data, parts)
        same, promoted = compare(cfg, y, challenger.proba, champion.proba)
        _, beats_weak = compare(cfg, y, challenger.proba, weak.proba)
        rows.append({"random_state": seed, "test_pr_auc": challenger.pr_auc, "diff": same.diff,
                     "diff_lower": same.diff_lower, "promoted_over_itself": promoted,
                     "promoted_over_weak": beats_weak})
        print(f"A/A {k + 1}/{n}: random_state {seed}: AP {challenger.pr_auc:.4f}, difference {same.diff:+.4f}, "
              f"lower bound {same.diff_lower:+.4f}: {'PROMOTED' if promoted else 'kept'}; over the weak champion: "
              f"{'promoted' if beats_weak else 'KEPT'} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    return {"champion_test_pr_auc": champion.pr_auc, "weak_test_pr_auc": weak.pr_auc, "challengers": rows,
            "false_promotion_rate": sum(r["promoted_over_itself"] for r in rows) / n,
            "power_vs_weak": sum(r["promoted_over_weak"] for r in rows) / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small synthetic data: seconds")
    parser.add_argument("--json", default=None, help="write the numbers here")
    parser.add_argument("--phases", default="holdout,aa", help="comma-separated subset of holdout, aa")
    parser.add_argument("--challengers", type=int, default=20, help="A/A retrains (at least 20 for the record)")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases or phases - {"holdout", "aa"}:
        parser.error(f"--phases {args.phases}: choose among holdout, aa")
    data_args = (["dataset=synthetic", "dataset.n_rows=20000", "dataset.fraud_rate=0.01",
                  "evaluation.bootstrap_samples=200"] if args.small else [])
    config = ["model.n_estimators=20", "model.max_depth=none", "model.min_samples_leaf=2"] if args.small else BEST
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "small": args.small,
                     "command": " ".join(["python -m tests.benchmark.gate", *sys.argv[1:]]), "config": config}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))

    if "holdout" in phases:
        results["holdout"] = holdout(data_args, config)
        save()
    if "aa" in phases:
        results["aa"] = aa(data_args, config, args.challengers)
        save()
    print(render(results))
    return 0


def render(r: dict) -> str:
    lines = [f"## Gate and holdout, {r['date']} ({'small synthetic' if r['small'] else 'real data'})", "",
             f"Command: `{r['command']}`; configuration {' '.join(r['config'])}.", ""]
    if "holdout" in r:
        lines += ["| split.method | test AP [95 % bootstrap interval] | test rows (frauds) | ROC AUC |",
                  "|---|---|---|---|"]
        for method, h in r["holdout"].items():
            lines.append(f"| {method} | {h['test_pr_auc']:.4f} [{h['ci_low']:.4f}, {h['ci_high']:.4f}] | "
                         f"{h['test_rows']} ({h['test_frauds']}) | {h['test_roc_auc']:.4f} |")
        lines.append("")
    if "aa" in r:
        a = r["aa"]
        n = len(a["challengers"])
        lines += [f"A/A: {n} retrains with other random_states against the champion (test AP "
                  f"{a['champion_test_pr_auc']:.4f}): promoted {a['false_promotion_rate']:.0%} "
                  f"({round(a['false_promotion_rate'] * n)}/{n}); against a weak champion (test AP "
                  f"{a['weak_test_pr_auc']:.4f}): promoted {a['power_vs_weak']:.0%}."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
