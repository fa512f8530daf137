"""Ours against a plain loop doing the same fits and the same logging: the cost of the sweeper's machinery.

    python -m tests.benchmark.loop                 # 20 trials each, in one run (a few minutes on 2 cores)
    python -m tests.benchmark.loop --trials 5      # what the test suite runs (no timing asserted)

The plain loop: an Optuna study in SQLite, ``study.ask()``/``tell()``, one parent MLflow run and a nested run per
trial logging params, 4 metrics, 3 tags, the config as a dict and the three sklearn-display plots: what a user
would write by hand. Ours: ``python -m src.train --multirun`` with the same data, model sizes, folds, search space
and plots (no pruner, no registry). Both on 20,000 synthetic rows (2 % fraud), 5-tree forests, 3-fold CV.

The number compared: per trial, the time outside fitting and scoring (a trial's wall time minus its fit_seconds);
the median over the trials. Ratio = ours / plain loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers.cli import ROOT

DATA = ["dataset=synthetic", "dataset.n_rows=20000", "dataset.fraud_rate=0.02", "model.n_estimators=5",
        "model.n_jobs=1", "evaluation.cv_folds=3", "evaluation.row_looks=[]"]  # the same fits as the plain loop


def plain_loop(store: Path, n_trials: int) -> dict:
    import matplotlib.pyplot as plt
    import mlflow
    import optuna
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from src.config import register_configs, validate
    from src.data.loading import load
    from src.data.split import split
    from src.model.evaluation import cross_validate
    from src.model.forest import build_model, hyperparameters
    from src.model.plots import plots

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        raw = compose("config", overrides=DATA)
    cfg = validate(raw)
    data = load(cfg.dataset)
    parts = split(data, cfg.split, cfg.evaluation)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", storage=f"sqlite:///{store / 'plain-optuna.db'}",
                                sampler=optuna.samplers.TPESampler(seed=0))
    mlflow.set_tracking_uri(f"sqlite:///{store / 'plain-mlflow.db'}")
    mlflow.set_experiment("plain-loop")
    space = {"max_depth": optuna.distributions.CategoricalDistribution([12, 16, 20, 24, 32, "none"]),
             "min_samples_split": optuna.distributions.IntDistribution(2, 10),
             "min_samples_leaf": optuna.distributions.IntDistribution(1, 4)}
    outside, started = [], time.perf_counter()
    with mlflow.start_run(run_name="plain-loop"):
        for number in range(n_trials):
            begin = time.perf_counter()
            trial = study.ask(space)
            model_cfg = cfg.model
            model_cfg.max_depth = trial.params["max_depth"]
            model_cfg.min_samples_split = trial.params["min_samples_split"]
            model_cfg.min_samples_leaf = trial.params["min_samples_leaf"]
            with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True):
                mlflow.log_params(hyperparameters(model_cfg))
                result = cross_validate(build_model(model_cfg), data, parts)
                mlflow.log_metrics({"val_pr_auc": result.pr_auc, "val_pr_auc_std": result.pr_auc_std,
                                    "val_roc_auc": result.roc_auc, "fit_seconds": result.fit_seconds})
                mlflow.set_tags({"run_purpose": "hyperparameter_tuning", "optuna.trial_number": str(number),
                                 "data_sha256": data.sha256})
                mlflow.log_dict(OmegaConf.to_container(raw, resolve=True), "config/config.yaml")
                for name, fig in plots(data.y[result.oof_index], result.oof_proba, 0.5, "out-of-fold").items():
                    mlflow.log_figure(fig, f"plots/{name}")
                    plt.close(fig)
            study.tell(trial, result.pr_auc)
            outside.append(time.perf_counter() - begin - result.fit_seconds)
    return {"median_outside_fit": statistics.median(outside), "wall": time.perf_counter() - started,
            "per_trial": outside}


def ours(store: Path, n_trials: int, *extra: str) -> dict:
    from mlflow.tracking import MlflowClient

    name = "ours" + "".join(f"-{e.rsplit('.', 1)[-1].replace('=', '_')}" for e in extra)
    tracking = f"sqlite:///{store / f'{name}-mlflow.db'}"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "src.train", "--multirun", *DATA, "registry.enabled=false",
                    "hydra.sweeper.pruner=none", f"hydra.sweeper.n_trials={n_trials}", *extra,
                    "hydra.sweeper.study_name=ours", f"hydra.sweeper.storage=sqlite:///{store / f'{name}-optuna.db'}",
                    f"mlflow.tracking_uri={tracking}", f"hydra.sweep.dir={store / name}"],
                   cwd=ROOT, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    client = MlflowClient(tracking)
    exp = client.get_experiment_by_name("creditcardfraud-sweep")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=5000,
                              filter_string="tags.run_purpose = 'hyperparameter_tuning'")
    ends = [r.info.end_time / 1000 for r in runs]
    fits = [r.data.metrics["fit_seconds"] for r in runs]
    # From one trial's end to the next one's end, minus the fit: the sweeper's telling, asking, launching and the
    # job's own logging. (The first trial also pays the process's start-up and is left out, as in the loop.)
    outside = [ends[i] - ends[i - 1] - fits[i] for i in range(1, len(runs))]
    return {"median_outside_fit": statistics.median(outside), "wall": wall, "per_trial": outside}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loop-") as tmp:
        store = Path(tmp)
        plain = plain_loop(store, args.trials)
        mine = ours(store, args.trials)
        composing = ours(store, args.trials, "hydra.sweeper.compose_once=false")  # the lever, off
    ratio = mine["median_outside_fit"] / plain["median_outside_fit"]
    results = {"command": " ".join(["python -m tests.benchmark.loop", *sys.argv[1:]]), "trials": args.trials,
               "plain": plain, "ours": mine, "ours_composing_each_trial": composing, "ratio": ratio,
               "ratio_composing_each_trial": composing["median_outside_fit"] / plain["median_outside_fit"]}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print("| per trial outside fitting (median) | seconds | / plain loop |\n|---|---|---|")
    print(f"| plain ask/tell loop + nested MLflow runs | {plain['median_outside_fit']:.3f} | 1.00 |")
    print(f"| ours (compose_once, the default) | {mine['median_outside_fit']:.3f} | {ratio:.2f} |")
    print(f"| ours, composing each trial's config | {composing['median_outside_fit']:.3f} | "
          f"{results['ratio_composing_each_trial']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
