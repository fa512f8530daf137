"""What the gate guarantees, measured on the right noise: test-sampling noise, with independent test samples.

    python -m tests.benchmark.gate --json gate.json   # 200 test samples of the real test split's size: ~1 h, 2 cores
    python -m tests.benchmark.gate --small            # a few small samples in a minute (the suite runs it)

Phases:
- holdout: the configured model refitted on the real training split and tested once under split.method=random and
  split.method=time (what the test split says about later transactions);
- aa: the synthetic twin as a population (its fraud campaigns fixed by one seed, rows drawn afresh with another:
  src.data.synthetic.generate(sample_seed=...)). Models are trained once on a training sample: the champion, an A/A
  challenger (the same configuration, another random_state: no better, checked on a sample ten times the test
  size), and champions made worse by exactly 0.02 and 0.05 AP on that large sample (the champion's scores mixed
  with noise); each model's threshold is chosen once on a validation sample. Then on each of ``--samples`` fresh
  test samples the gate's own rule decides (src.lifecycle.gate.decide on gathered evidence, at each of LEVELS,
  margin 0), for each criterion: the share of A/A promotions is the false-promotion rate (with its 95 % Wilson
  interval), the share of promotions over the worse champions the power.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from tests.helpers.cli import ROOT

POPULATION = 7  # the twin's seed: its campaigns (any fixed seed)
CRITERIA = ("pr_auc", "net_gain")
LEVELS = (0.95, 0.975, 0.99)  # registry.confidence: the textbook level, one between, the default (0.99)


def composed(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from src.config import register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return validate(compose("config", overrides=overrides))


def holdout(config: list[str]) -> dict:
    from src.data.loading import load
    from src.data.split import split
    from src.jobs.prepared import inputs_of, names_of
    from src.model.evaluation import fit_and_test
    from src.model.forest import build_model

    rows = {}
    for method in ("random", "time"):
        cfg = composed([*config, f"split.method={method}"])
        data = load(cfg.dataset)
        parts = split(data, cfg.split, cfg.evaluation)
        started = time.perf_counter()
        _, test = fit_and_test(build_model(cfg.model), data, parts, cfg.evaluation.bootstrap_samples,
                               seed=cfg.split.seed, X=inputs_of(cfg, data), names=names_of(cfg))
        rows[method] = {"test_pr_auc": test.pr_auc, "ci_low": test.pr_auc_ci_low, "ci_high": test.pr_auc_ci_high,
                        "test_rows": int(len(parts.test)), "test_frauds": int(data.y[parts.test].sum()),
                        "seconds": round(time.perf_counter() - started, 1)}
        print(f"{method}: test AP {test.pr_auc:.4f} [{test.pr_auc_ci_low:.4f}, {test.pr_auc_ci_high:.4f}]",
              file=sys.stderr, flush=True)
    return rows


def sample(n: int, rate: float, seed: int):
    from src.data.schema import AMOUNT, FEATURES
    from src.data.synthetic import generate

    frame = generate(n, rate, POPULATION, sample_seed=seed)
    X = frame[FEATURES].to_numpy(np.float64)
    return X, frame["Class"].to_numpy().astype(int), X[:, AMOUNT]


class Scorer:
    """A model of the A/A study: a forest, or a forest's scores mixed with noise (a model worse by a set amount)."""

    def __init__(self, forest, noise: float = 0.0, seed: int = 0) -> None:
        self.forest, self.noise, self.seed = forest, noise, seed

    def proba(self, X: np.ndarray) -> np.ndarray:
        import pandas as pd

        from src.data.schema import FEATURES
        from src.model.inputs import derive, feature_names

        frame = pd.DataFrame(derive(X, FEATURES, "time_of_day"), columns=feature_names(FEATURES, "time_of_day"))
        p = self.forest.predict_proba(frame)[:, 1]
        if self.noise:
            rng = np.random.default_rng([self.seed, len(X)])
            p = (1 - self.noise) * p + self.noise * rng.random(len(X))
        return p


def degrade_to(forest, X: np.ndarray, y: np.ndarray, gap: float, target_ap: float) -> Scorer:
    """The noise weight that makes the champion worse by ``gap`` AP on (X, y) (bisection)."""
    from sklearn.metrics import average_precision_score

    low, high = 0.0, 1.0
    for _ in range(30):
        mid = (low + high) / 2
        ap = average_precision_score(y, Scorer(forest, mid, seed=11).proba(X))
        low, high = (mid, high) if target_ap - ap < gap else (low, mid)
    return Scorer(forest, (low + high) / 2, seed=11)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def aa(args: argparse.Namespace) -> dict:
    import pandas as pd
    from sklearn.metrics import average_precision_score

    from src.config import DecisionConfig, RandomForestConfig
    from src.data.schema import FEATURES
    from src.lifecycle.gate import Comparison, Evidence, Verdict, decide
    from src.lifecycle.ledger import Rule
    from src.model.decision import Payoffs, best_threshold
    from src.model.evaluation import bootstrap_aps, resample_counts
    from src.model.forest import build_model
    from src.model.inputs import derive, feature_names

    n_train, n_test, rate = (20_000, 5_000, 0.01) if args.small else (227_845, 56_962, 0.00172)
    trees = 20 if args.small else 200
    X, y, _ = sample(n_train, rate, seed=1)
    names = feature_names(FEATURES, "time_of_day")

    def forest(random_state: int):
        model = build_model(RandomForestConfig(n_estimators=trees, random_state=random_state))
        return model.fit(pd.DataFrame(derive(X, FEATURES, "time_of_day"), columns=names), y)

    started = time.perf_counter()
    champion_forest = forest(42)
    models = {"champion": Scorer(champion_forest), "aa_challenger": Scorer(forest(4242))}
    big_X, big_y, big_amount = sample(10 * n_test, rate, seed=2)
    big_ap = {k: average_precision_score(big_y, m.proba(big_X)) for k, m in models.items()}
    for gap in (0.02, 0.05):
        models[f"worse_by_{gap}"] = degrade_to(champion_forest, big_X, big_y, gap, big_ap["champion"])
    cost = DecisionConfig()
    big_pay = Payoffs.of(cost, big_y, big_amount)
    val_X, val_y, val_amount = sample(n_test, rate, seed=3)
    thresholds = {k: best_threshold(Payoffs.of(cost, val_y, val_amount), m.proba(val_X))[0]
                  for k, m in models.items()}
    truth = {k: {"ap": float(average_precision_score(big_y, m.proba(big_X))),
                 "net_gain_per_test_sample": float(big_pay.at(m.proba(big_X), thresholds[k]).sum() / 10)}
             for k, m in models.items()}
    print(f"models ready in {time.perf_counter() - started:.0f} s; on {10 * n_test:,} rows: "
          + ", ".join(f"{k} AP {v['ap']:.4f}" for k, v in truth.items()), file=sys.stderr, flush=True)
    # both directions of the A/A pair: whatever small true difference two random states leave, averaged over both
    # directions it is exactly 0 (and a rate measured so cannot be below the rate at a difference of 0)
    pairs = {"aa": ("aa_challenger", "champion"), "aa_reverse": ("champion", "aa_challenger"),
             "gap_0.02": ("champion", "worse_by_0.02"), "gap_0.05": ("champion", "worse_by_0.05")}
    promoted = {pair: {c: {str(level): 0 for level in LEVELS} for c in CRITERIA} for pair in pairs}
    records: dict[str, list] = {pair: [] for pair in pairs}
    started = time.perf_counter()
    for s in range(args.samples):
        Xs, ys, amount = sample(n_test, rate, seed=1000 + s)
        pay = Payoffs.of(cost, ys, amount)
        proba = {k: m.proba(Xs) for k, m in models.items()}
        for pair, (chal, champ) in pairs.items():
            a, b = bootstrap_aps(ys, [proba[chal], proba[champ]], args.boot, seed=s)
            gain_rows = pay.at(proba[chal], thresholds[chal]) - pay.at(proba[champ], thresholds[champ])
            gains = np.concatenate([c @ gain_rows for c in resample_counts(n_test, args.boot, seed=s)])
            ap_diff = float(average_precision_score(ys, proba[chal]) - average_precision_score(ys, proba[champ]))
            champion_ap = float(average_precision_score(ys, proba[champ]))
            row = {"ap_diff": ap_diff, "gain_diff": float(gain_rows.sum())}
            for level in LEVELS:
                comparison = Comparison(ap_diff=ap_diff, ap_lower=float(np.quantile(a - b, 1 - level)),
                                        gain_diff=row["gain_diff"], gain_lower=float(np.quantile(gains, 1 - level)))
                row[f"ap_lower_{level}"], row[f"gain_lower_{level}"] = comparison.ap_lower, comparison.gain_lower
                evidence = Evidence(challenger_ap=champion_ap + ap_diff, challenger_gain=0.0, uses=1, n_rows=n_test,
                                    champion_version="1", champion_ap=champion_ap, champion_recorded_ap=champion_ap,
                                    champion_gain=0.0, comparison=comparison)
                for criterion in CRITERIA:
                    rule = Rule(criterion=criterion, confidence=level, margin=0.0, max_test_uses=3)
                    promoted[pair][criterion][str(level)] += decide(evidence, rule, "").verdict == Verdict.PROMOTED
            records[pair].append(row)
        if (s + 1) % 10 == 0 or s + 1 == args.samples:
            print(f"{s + 1}/{args.samples} test samples ({time.perf_counter() - started:.0f} s): " + "; ".join(
                f"{pair} {promoted[pair]['pr_auc']['0.99']}/{promoted[pair]['net_gain']['0.99']}" for pair in pairs),
                file=sys.stderr, flush=True)
    n = args.samples
    rates = {pair: {c: {level: {"promoted": k, "rate": k / n, "ci95": wilson(k, n)} for level, k in by_level.items()}
                    for c, by_level in counts.items()} for pair, counts in promoted.items()}
    false = {c: {str(level): (lambda k: {"promoted": k, "of": 2 * n, "rate": k / (2 * n), "ci95": wilson(k, 2 * n)})(
        promoted["aa"][c][str(level)] + promoted["aa_reverse"][c][str(level)]) for level in LEVELS} for c in CRITERIA}
    return {"samples": n, "test_rows": n_test, "train_rows": n_train, "trees": trees, "bootstrap": args.boot,
            "truth": truth, "thresholds": thresholds, "rates": rates, "false_promotion": false, "records": records}


def render(r: dict) -> str:
    lines = [f"## Gate, {r['date']} ({'small synthetic' if r['small'] else 'full size'})", "",
             f"Command: `{r['command']}`.", ""]
    if "holdout" in r:
        lines += ["| split.method | test AP [95 % bootstrap interval] | test rows (frauds) |", "|---|---|---|"]
        for method, h in r["holdout"].items():
            lines.append(f"| {method} | {h['test_pr_auc']:.4f} [{h['ci_low']:.4f}, {h['ci_high']:.4f}] | "
                         f"{h['test_rows']} ({h['test_frauds']}) |")
        lines.append("")
    if "aa" in r:
        a = r["aa"]
        t = a["truth"]
        lines += [f"{a['samples']} independent test samples of {a['test_rows']:,} rows; true values on "
                  f"{10 * a['test_rows']:,} rows: " + ", ".join(f"{k} AP {v['ap']:.4f}, net gain "
                                                                  f"{v['net_gain_per_test_sample']:,.0f}"
                                                                  for k, v in t.items()), "",
                  "False promotions (the A/A pair, both directions: a true difference of exactly 0 on average):", "",
                  "| registry.confidence | criterion pr_auc [95 %] | criterion net_gain [95 %] |", "|---|---|---|"]
        fp = a["false_promotion"]
        for level in fp["pr_auc"]:
            cells = [f"{x['promoted']}/{x['of']} = {x['rate']:.1%} [{x['ci95'][0]:.1%}, {x['ci95'][1]:.1%}]"
                     for x in (fp["pr_auc"][level], fp["net_gain"][level])]
            lines.append(f"| {level} | {cells[0]} | {cells[1]} |")
        lines += ["", "Promotions per pair (challenger vs champion; the true difference on the large sample):", "",
                  "| pair | true AP difference | true net gain difference | registry.confidence | pr_auc | net_gain |",
                  "|---|---|---|---|---|---|"]
        names = {"aa": ("aa_challenger", "champion"), "aa_reverse": ("champion", "aa_challenger"),
                 "gap_0.02": ("champion", "worse_by_0.02"), "gap_0.05": ("champion", "worse_by_0.05")}
        for pair, rates in a["rates"].items():
            chal, champ = names[pair]
            for level in rates["pr_auc"]:
                cells = [f"{x['rate']:.1%} [{x['ci95'][0]:.1%}, {x['ci95'][1]:.1%}]"
                         for x in (rates["pr_auc"][level], rates["net_gain"][level])]
                lines.append(f"| {pair} | {t[chal]['ap'] - t[champ]['ap']:+.4f} | "
                             f"{t[chal]['net_gain_per_test_sample'] - t[champ]['net_gain_per_test_sample']:+,.0f} | "
                             f"{level} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small samples: a minute")
    parser.add_argument("--json", default=None, help="write the numbers here")
    parser.add_argument("--phases", default="aa", help="comma-separated subset of holdout, aa")
    parser.add_argument("--samples", type=int, default=None, help="independent test samples (200 by default)")
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap resamples per comparison")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases or phases - {"holdout", "aa"}:
        parser.error(f"--phases {args.phases}: choose among holdout, aa")
    args.samples = args.samples or (6 if args.small else 200)
    if args.small:
        args.boot = min(args.boot, 200)
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "small": args.small,
                     "command": " ".join(["python -m tests.benchmark.gate", *sys.argv[1:]])}
    if "holdout" in phases:
        results["holdout"] = holdout([] if not args.small else ["dataset=synthetic", "dataset.n_rows=20000",
                                                                "dataset.fraud_rate=0.01", "model.n_estimators=20"])
    if "aa" in phases:
        results["aa"] = aa(args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
