"""Speed benchmark: search efficiency, overhead, pruning, memory and fixed cost per trial, in one run.

    python -m tests.benchmark.speed                # the real data (downloads it if needed): hours on 2 cores
    python -m tests.benchmark.speed --small        # a few minutes on small synthetic data (CI runs it)

Every sweep is a real command-line run (``python -m src.train --multirun``) into a private temporary store;
the results are printed as a Markdown section and written to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The seed's five hand-picked configurations: (n_estimators, max_depth, min_samples_split, min_samples_leaf).
SEED_CONFIGS = [(100, 5, 2, 1), (200, 10, 5, 2), (300, 8, 10, 4), (400, 20, 2, 1), (200, 6, 20, 10)]


def run_cli(args: list[str], store: Path, measure_memory: bool = False) -> dict:
    """One command-line run; returns its wall time, peak RSS (KiB, whole process tree) and stderr."""
    cmd = [sys.executable, "-m", "src.train", *args]
    if measure_memory and Path("/usr/bin/time").exists():
        cmd = ["/usr/bin/time", "-v", *cmd]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    return {"wall": wall, "rss_kib": int(rss.group(1)) if rss else None, "stderr": proc.stderr}


def sweep_stats(tracking_uri: str, study_name: str) -> dict:
    """From MLflow: the parent run's duration, the trials' fit seconds, best objective."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    (parent,) = client.search_runs([exp.experiment_id],
                                   filter_string=f"tags.run_purpose = 'hyperparameter_sweep' and "
                                                 f"tags.`optuna.study_name` = '{study_name}'")
    trials = client.search_runs([exp.experiment_id], max_results=5000,
                                filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    fit = [r.data.metrics.get("fit_seconds", 0.0) for r in trials]
    complete = [r for r in trials if "val_pr_auc" in r.data.metrics]
    best = max(complete, key=lambda r: (r.data.metrics["val_pr_auc"],  # ties: the first trial, as the sweeper
                                        -int(r.data.tags.get("optuna.trial_number", 0)))) if complete else None
    duration = (parent.info.end_time - parent.info.start_time) / 1000
    work = fitting_work(client, trials)
    return {
        "parent_seconds": duration,
        "fit_seconds": sum(fit),
        "overhead_fraction": (duration - sum(fit)) / duration,
        "n_trials": len(trials),
        "n_complete": len(complete),
        "best": best.data.metrics["val_pr_auc"] if best else None,
        "best_std": best.data.metrics.get("val_pr_auc_std") if best else None,
        "best_trial": best.data.tags.get("optuna.trial_number") if best else None,
        "best_params": {k: best.data.params[k] for k in ("n_estimators", "max_depth", "min_samples_split",
                                                          "min_samples_leaf")} if best else None,
        "trial_fit_seconds": fit,
        "trials": sorted(({"number": int(r.data.tags.get("optuna.trial_number", -1)),
                           "state": r.data.tags.get("optuna.trial_state"),
                           "value": r.data.metrics.get("val_pr_auc"), "std": r.data.metrics.get("val_pr_auc_std"),
                           "params": {k: r.data.params.get(k) for k in ("n_estimators", "max_depth",
                                                                        "min_samples_split", "min_samples_leaf")},
                           "fit_seconds": r.data.metrics.get("fit_seconds"),
                           "ended": (r.info.end_time or r.info.start_time) / 1000,
                           "tree_folds": work.get(r.info.run_id)} for r in trials),
                          key=lambda t: t["number"]),
        "tree_folds": sum(work.values()) if work else None,
    }


def best_within(trials: list[dict], since: float, seconds: float | None = None,
                tree_folds: float | None = None) -> dict | None:
    """The best complete trial of those that ended within a budget: of wall (``seconds`` after ``since``, an epoch)
    or of fitting work (the tree-folds of every trial ended by then, in the order they ended). What the study had,
    had it been stopped there; one worker (trials end in turn)."""
    done, spent = [], 0.0
    for t in sorted(trials, key=lambda t: t["ended"]):
        spent += t["tree_folds"] or 0.0
        if (seconds is not None and t["ended"] - since > seconds) or (tree_folds is not None and spent > tree_folds):
            break
        if t["value"] is not None:
            done.append({**t, "ended_after": t["ended"] - since, "tree_folds_by_then": spent})
    return max(done, key=lambda t: (t["value"], -t["number"]), default=None)


def fitting_work(client, trials: list) -> dict[str, float]:
    """Each trial's fitting work in tree-folds, by run id: its trees times the share of a fold each look or fold grew
    (a look at 1/9 of fold 1's rows counts 1/9), from the steps its run logged. Host-independent, unlike a wall; a
    trial that took an earlier twin's result logged no step and costs 0. Steps count rows in units of the first
    look, so a look's share is its step over fold 1's (the same step in every trial); empty if no trial reached
    fold 1 (nothing to scale the looks by)."""
    histories = {r.info.run_id: {name: {m.step for m in client.get_metric_history(r.info.run_id, name)}
                                 for name in ("val_pr_auc_row_look", "val_pr_auc_running_mean")} for r in trials}
    fold_steps = [min(h["val_pr_auc_running_mean"]) for h in histories.values() if h["val_pr_auc_running_mean"]]
    if not fold_steps:
        return {}
    fold_one = min(fold_steps)
    trees = {r.info.run_id: float(r.data.params.get("n_estimators", 0)) for r in trials}
    return {run: trees[run] * (sum(s / fold_one for s in h["val_pr_auc_row_look"]) + len(h["val_pr_auc_running_mean"]))
            for run, h in histories.items()}


def _composed(data_args: list[str], *overrides: str):
    """The validated config, its data and its split/folds: what every in-process phase starts from."""
    from hydra import compose, initialize_config_dir

    from src.config import register_configs, validate
    from src.data.loading import load
    from src.data.split import split

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = validate(compose("config", overrides=[*data_args, *overrides]))
    data = load(cfg.dataset)
    return cfg, data, split(data, cfg.split, cfg.evaluation)


def seed_configs_protocol(data_args: list[str], tree_scale: float = 1.0) -> list[dict]:
    """The five seed configurations scored with our objective protocol (same split and folds as the sweeps);
    ``tree_scale`` shrinks their forests for the small mode, whose sweeps grow 20 trees."""
    import copy

    from src.model.evaluation import cross_validate
    from src.model.forest import build_model

    base, data, parts = _composed(data_args)  # one load and split for all five
    rows = []
    for n, depth, mss, msl in SEED_CONFIGS:
        n = max(1, round(n * tree_scale))
        model = copy.deepcopy(base.model)
        model.n_estimators, model.max_depth, model.min_samples_split, model.min_samples_leaf = n, depth, mss, msl
        result = cross_validate(build_model(model), data, parts)
        rows.append({"config": (n, depth, mss, msl), "ap": result.pr_auc, "ap_std": result.pr_auc_std,
                     "fit_seconds": result.fit_seconds})
        print(f"seed config {rows[-1]['config']}: AP {result.pr_auc:.4f} ± {result.pr_auc_std:.4f}, "
              f"{result.fit_seconds:.1f} s", file=sys.stderr, flush=True)
    return rows


def tree_curve(data_args: list[str], max_trees: int, step: int) -> list[dict]:
    """The configured model's objective as its forest grows (warm_start: the first n trees of a bigger forest are
    the n-tree forest), on the same folds: where more trees stop paying for their time."""
    import numpy as np
    from sklearn.metrics import average_precision_score

    from src.model.evaluation import fraud_proba
    from src.model.forest import build_model

    cfg, data, parts = _composed(data_args)
    sizes = list(range(step, max_trees + 1, step))
    ap = {n: [] for n in sizes}
    fit = dict.fromkeys(sizes, 0.0)
    for fit_idx, val_idx in parts.folds:
        model, seconds = build_model(cfg.model).set_params(warm_start=True), 0.0
        for n in sizes:
            start = time.perf_counter()
            model.set_params(n_estimators=n).fit(data.X[fit_idx], data.y[fit_idx])
            seconds += time.perf_counter() - start
            fit[n] += seconds  # growing time only: what an n-tree fit costs
            ap[n].append(float(average_precision_score(data.y[val_idx], fraud_proba(model, data.X[val_idx]))))
    rows = [{"trees": n, "ap": float(np.mean(ap[n])), "ap_std": float(np.std(ap[n], ddof=1)),
             "fit_seconds": fit[n]} for n in sizes]
    for row in rows:
        print(f"{row['trees']} trees: AP {row['ap']:.4f} ± {row['ap_std']:.4f}, fit {row['fit_seconds']:.0f} s",
              file=sys.stderr, flush=True)
    return rows


def bare_optuna_loop(data_args: list[str], n_trials: int) -> dict:
    """The same fits in a plain Optuna loop (no Hydra, no MLflow): the floor for per-trial fixed cost."""
    import copy

    import optuna

    from src.model.evaluation import cross_validate
    from src.model.forest import build_model

    base, data, parts = _composed(data_args)
    per_trial: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        start = time.perf_counter()
        cfg = copy.deepcopy(base)
        cfg.model.max_depth = trial.suggest_categorical("max_depth", [12, 16, 20, 24, 32, None])  # the default space
        cfg.model.min_samples_split = trial.suggest_int("min_samples_split", 2, 10)
        cfg.model.min_samples_leaf = trial.suggest_int("min_samples_leaf", 1, 4)
        result = cross_validate(build_model(cfg.model), data, parts)
        per_trial.append(time.perf_counter() - start - result.fit_seconds)
        return result.pr_auc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        study = optuna.create_study(direction="maximize", storage=f"sqlite:///{tmp}/bare.db",
                                    sampler=optuna.samplers.TPESampler(seed=0))
        started = time.perf_counter()
        study.optimize(objective, n_trials=n_trials)
        wall = time.perf_counter() - started
    return {"median_outside_fit": statistics.median(per_trial), "wall": wall}


def ours_fixed_cost(tracking_uri: str, study_name: str) -> float:
    """Median per-trial time outside fitting: from one trial's end to the next one's end, minus its fit."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    runs = client.search_runs([exp.experiment_id], max_results=5000, order_by=["attributes.start_time ASC"],
                              filter_string=f"tags.run_purpose = 'hyperparameter_tuning' and "
                                            f"tags.`optuna.study_name` = '{study_name}'")
    ends = [r.info.end_time / 1000 for r in runs]
    fits = [r.data.metrics["fit_seconds"] for r in runs]
    return statistics.median(ends[i] - ends[i - 1] - fits[i] for i in range(1, len(runs)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small synthetic data: minutes, for CI")
    parser.add_argument("--json", default=None, help="write the numbers here")
    parser.add_argument("--pruning-trials", type=int, default=None)
    parser.add_argument("--phases", default="trees,search,pruning,tiny",
                        help="comma-separated subset of trees (the configured model's AP as its forest grows), "
                             "search (seed configs, budgets B and B/2, overhead, memory), pruning (30 trials with "
                             "and without), tiny (fixed cost per trial); search and pruning take hours on real data")
    args = parser.parse_args()
    phases = set(args.phases.split(","))
    if not phases or phases - {"trees", "search", "pruning", "tiny"}:
        parser.error(f"--phases {args.phases}: choose among trees, search, pruning, tiny")

    if args.small:
        data_args = ["dataset=synthetic", "dataset.n_rows=8000", "dataset.fraud_rate=0.01", "mlflow.log_plots=false",
                     "model.n_estimators=20"]
        pruning_trials, tiny_trials, tree_scale = args.pruning_trials or 4, 5, 0.1
    else:
        data_args = []
        pruning_trials, tiny_trials, tree_scale = args.pruning_trials or 30, 30, 1.0
    tiny_args = ["dataset=synthetic", "dataset.n_rows=20000", "model.n_estimators=5", "evaluation.row_looks=[]"]
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "small": args.small,
                     "command": " ".join(["python -m tests.benchmark.speed", *sys.argv[1:]])}

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        store = Path(tmp)
        tracking = f"sqlite:///{store / 'mlflow.db'}"

        def save() -> None:  # after every sweep and phase, so that an interrupted run keeps what it measured
            if args.json:
                Path(args.json).write_text(json.dumps(results, indent=2, default=str))

        def sweep(key: str, name: str, *extra: str, memory: bool = False, data: list[str] = data_args) -> dict:
            """One sweep, its numbers stored under ``results[key]`` and saved."""
            common = ["--multirun", *data, f"mlflow.tracking_uri={tracking}", "registry.enabled=false",
                      f"hydra.sweeper.storage=sqlite:///{store / 'optuna.db'}", f"hydra.sweeper.study_name={name}",
                      f"hydra.sweep.dir={store / name}"]
            run = run_cli([*common, *extra], store, measure_memory=memory)
            stats = sweep_stats(tracking, name)
            stats.update(wall=run["wall"], rss_kib=run["rss_kib"],
                         progress=[line for line in run["stderr"].splitlines() if line.startswith("trial ")])
            print(f"{name}: wall {run['wall']:.0f} s, {stats['n_trials']} trials, best {stats['best']}, "
                  f"overhead {stats['overhead_fraction']:.1%}", file=sys.stderr, flush=True)
            results[key] = stats
            save()
            return stats

        if "trees" in phases:  # what the default forest size rests on
            results["tree_curve"] = tree_curve(data_args, *((40, 10) if args.small else (300, 50)))
            save()
        if "search" in phases:  # 1. search efficiency against the seed's five configurations; 2. overhead; 4. memory
            seeds = seed_configs_protocol(data_args, tree_scale)
            budget = sum(r["fit_seconds"] for r in seeds)
            results["seed_configs"] = seeds
            results["budget_seconds"] = budget
            results["seed_best"] = max(r["ap"] for r in seeds)
            sweep("sweep_B", "bench-budget-B", f"hydra.sweeper.timeout={budget:.3f}", "hydra.sweeper.n_trials=10000",
                  memory=True)
            sweep("sweep_B_half", "bench-budget-B-half", f"hydra.sweeper.timeout={budget / 2:.3f}",
                  "hydra.sweeper.n_trials=10000")
        if "pruning" in phases:  # 3. the same study with and without pruning
            for key, pruner in (("pruned", "median"), ("unpruned", "none")):
                sweep(key, f"bench-{key}", f"hydra.sweeper.n_trials={pruning_trials}",
                      f"hydra.sweeper.pruner={pruner}", memory=key == "pruned")
        if "tiny" in phases:  # 5. fixed cost per trial on a tiny model, ours against a bare Optuna loop
            tiny = sweep("tiny", "bench-tiny", f"hydra.sweeper.n_trials={tiny_trials}", "hydra.sweeper.pruner=none",
                         data=tiny_args)
            results["tiny_ours_median_outside_fit"] = ours_fixed_cost(tracking, "bench-tiny")
            results["tiny_ours_wall"] = tiny["wall"]
            bare = bare_optuna_loop(tiny_args, tiny_trials)
            results["tiny_bare_median_outside_fit"] = bare["median_outside_fit"]
            results["tiny_bare_wall"] = bare["wall"]
            save()

    for key in ("sweep_B", "sweep_B_half", "pruned", "unpruned", "tiny"):
        if key in results:
            results[key].pop("trial_fit_seconds", None)
    print(render(results))
    save()
    return 0


def render(r: dict) -> str:
    """A Markdown section with a row for each measurement this run made."""
    lines = [
        f"## Run of {r['date']} ({'small synthetic' if r['small'] else 'real data'})",
        "",
        f"Command: `{r['command']}`",
        "",
        "| Measurement | Result | Target |",
        "|---|---|---|",
    ]
    if "sweep_B" in r:
        b, half = r["sweep_B"], r["sweep_B_half"]
        lines += [
            f"| Seed's five configs (our protocol): best AP, total fit time B | {_seed_best(r)}, "
            f"B = {r['budget_seconds']:.0f} s | - |",
            f"| Sweep with budget B: best AP found ({b['n_trials']} trials, wall {b['wall']:.0f} s) | "
            f"{_ap(b)} | >= {r['seed_best']:.4f} |",
            f"| Sweep with budget B/2: best AP found ({half['n_trials']} trials, wall {half['wall']:.0f} s) | "
            f"{_ap(half)} | (reported) |",
            f"| Overhead outside fitting and scoring (sweep B) | {b['overhead_fraction']:.1%} | <= 2 % |",
        ]
    if "pruned" in r:
        p, u = r["pruned"], r["unpruned"]
        gap = (u["best"] or 0) - (p["best"] or 0)
        lines += [
            f"| Pruning: wall time pruned / unpruned ({p['n_trials']} trials each) | "
            f"{p['wall']:.0f} s / {u['wall']:.0f} s = {p['wall'] / u['wall']:.2f} | <= 0.6 |",
            f"| Pruning: best AP pruned vs unpruned | {_ap(p)} vs {_ap(u)} (gap {gap:+.4f}) | "
            f"within 0.005 |",
        ]
    rss = [r[k]["rss_kib"] for k in ("sweep_B", "pruned") if k in r and r[k]["rss_kib"]]
    if rss:
        lines.append(f"| Peak RSS of a sweep (whole process) | {max(rss) / 1024**2:.2f} GiB | <= 1.5 GiB |")
    if "tiny_ours_median_outside_fit" in r:
        lines.append(f"| Fixed cost per trial, tiny model (20,000 rows, 5 trees): ours / bare Optuna | "
                     f"{r['tiny_ours_median_outside_fit']:.3f} s / {r['tiny_bare_median_outside_fit']:.3f} s | "
                     f"(reported) |")
    if "tree_curve" in r:
        curve = ", ".join(f"{c['trees']}: {c['ap']:.4f} ± {c['ap_std']:.4f} ({c['fit_seconds']:.0f} s)"
                          for c in r["tree_curve"])
        lines += ["", f"The configured model as its forest grows (trees: AP ± std over folds, fit time): {curve}."]
    if "seed_configs" in r:
        seeds = ", ".join(f"{tuple(s['config'])}: {s['ap']:.4f} ± {s['ap_std']:.4f} ({s['fit_seconds']:.0f} s)"
                          for s in r["seed_configs"])
        lines += ["", f"Seed configs (AP ± std over folds, fit time): {seeds}."]
    return "\n".join(lines)


def _seed_best(r: dict) -> str:
    best = max(r["seed_configs"], key=lambda s: s["ap"])
    return f"{best['ap']:.4f} ± {best['ap_std']:.4f} {tuple(best['config'])}"


def _ap(sweep: dict) -> str:
    """A sweep's best AP with its std over folds, its trial and its configuration."""
    if sweep.get("best") is None:
        return "-"
    params = ", ".join(str(v) for v in (sweep.get("best_params") or {}).values())
    std = sweep.get("best_std") or float("nan")
    return f"{sweep['best']:.4f} ± {std:.4f} (trial {sweep.get('best_trial')}: {params})"


if __name__ == "__main__":
    sys.exit(main())
