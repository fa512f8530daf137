"""Time to the best model: our default study against scikit-learn's successive halving, one trial at a time against
two side by side, and the stopping rule against the full study, in one run on one machine.

    python -m tests.benchmark.peer --json peer.json   # the real data: about an hour on 2 cores
    python -m tests.benchmark.peer --small            # small synthetic data in a minute (the test suite runs it)

Phases (``--phases``, all by default), each into a private temporary store:
- peer: ``HalvingRandomSearchCV`` over the default search space, 20 candidates, rows as the resource (factor 3:
  1/9, 1/3, all of the training split), 3-fold stratified CV, average precision, both cores per fit, no tracking;
- serial: ``python -m src.train --multirun registry.enabled=false`` (the default study: 20 trials, the median
  pruner from fold 1, one trial at a time with both cores);
- parallel: the same study run by two workers on one storage at once, one core per fit (``model.n_jobs=1``);
- converged: the default study with ``hydra.sweeper.stop_when_converged=true``;
- rescore: each phase's best configuration scored on other folds (3-fold CV of the training split with another
  shuffle seed), so that "a tie" is judged on folds no search has seen. The test split is never used.

Wall times are the commands' own; CPU utilisation is the children's user + system time over wall x cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.benchmark.speed import ROOT, sweep_stats

PHASES = ("peer", "serial", "parallel", "converged", "rescore")
KEYS = ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf")


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _composed(data_args: list[str]):
    from tests.benchmark.speed import _composed as composed

    return composed(data_args)


def _space() -> dict[str, list]:
    """The default search space, read from conf/search_space (Hydra's grammar, expanded by Hydra's parser)."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = yaml.safe_load((ROOT / "conf/search_space/random_forest.yaml").read_text())["hydra"]["sweeper"]["params"]
    parser = OverridesParser.create()
    space = {}
    for key, expr in params.items():
        value = parser.parse_override(f"{key}={expr}").value()
        values = list(value.list) if hasattr(value, "list") else list(range(int(value.start), int(value.stop),
                                                                             int(value.step)))
        space[key.split(".")[-1]] = [None if v in ("none", None) else v for v in values]
    return space


def halving_peer(data_args: list[str], candidates: int, n_jobs: int) -> dict:
    """scikit-learn's successive halving over rows, with our model's fixed settings and the same training split."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV, StratifiedKFold

    from src.model.forest import build_model

    cfg, data, parts = _composed(data_args)
    x, y = data.X[parts.train], data.y[parts.train]
    space = _space()
    model = build_model(cfg.model)
    model.set_params(n_jobs=n_jobs)
    search = HalvingRandomSearchCV(model, space, n_candidates=candidates, factor=3, resource="n_samples",
                                   min_resources=len(y) // 9, cv=StratifiedKFold(3, shuffle=True, random_state=42),
                                   scoring="average_precision", refit=False, random_state=0)
    cpu, start = _cpu(), time.perf_counter()
    search.fit(x, y)
    wall = time.perf_counter() - start
    best = {k: search.best_params_[k] for k in KEYS}
    return {"wall": wall, "cpu_utilisation": (_cpu() - cpu) / wall / (os.cpu_count() or 1), "best_params": best,
            "best": float(search.best_score_), "rows_per_iteration": [int(n) for n in search.n_resources_],
            "candidates_per_iteration": [int(n) for n in search.n_candidates_]}


def study(store: Path, name: str, data_args: list[str], *extra: str, workers: int = 1) -> dict:
    """Our default study from the command line; with ``workers`` > 1, that many processes on one storage at once."""
    tracking = f"sqlite:///{store / 'mlflow.db'}"
    common = ["--multirun", *data_args, f"mlflow.tracking_uri={tracking}", "registry.enabled=false",
              f"hydra.sweeper.storage=sqlite:///{store / 'optuna.db'}", f"hydra.sweeper.study_name={name}", *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cpu, start = _cpu(), time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "src.train", *common, f"hydra.sweep.dir={store / name / str(i)}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(workers)]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    for p, (_, err) in zip(procs, outputs, strict=True):
        if p.returncode != 0:
            raise RuntimeError(f"{name} failed:\n{err[-3000:]}")
    stats = sweep_stats(tracking, name)
    stats.pop("trial_fit_seconds", None)
    stderr = "\n".join(err for _, err in outputs)
    stats.update(wall=wall, workers=workers, cpu_utilisation=(_cpu() - cpu) / wall / (os.cpu_count() or 1),
                 stopped=[line for line in stderr.splitlines() if line.startswith("stopping early:")],
                 progress=[line for line in stderr.splitlines() if line.startswith("trial ")])
    return stats


def rescore(data_args: list[str], params: dict, seed: int = 7) -> dict:
    """A configuration scored on other folds of the training split (another shuffle): no search has seen them."""
    import copy

    from sklearn.metrics import average_precision_score
    from sklearn.model_selection import StratifiedKFold

    from src.model.forest import build_model

    cfg, data, parts = _composed(data_args)
    model_cfg = copy.deepcopy(cfg.model)
    for key in KEYS:
        value = params[key]
        setattr(model_cfg, key, None if value in (None, "None", "none") else int(value))
    x, y = data.X[parts.train], data.y[parts.train]
    scores, start = [], time.perf_counter()
    for fit, val in StratifiedKFold(3, shuffle=True, random_state=seed).split(x, y):
        model = build_model(model_cfg).fit(x[fit], y[fit])
        scores.append(float(average_precision_score(y[val], model.predict_proba(x[val])[:, 1])))
    mean = sum(scores) / len(scores)
    std = (sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)) ** 0.5
    return {"params": {k: params[k] for k in KEYS}, "ap": mean, "std": std, "folds": scores,
            "seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="small synthetic data, a minute (the suite runs it)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {', '.join(PHASES)}")
    parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                        help="an override for every one of our studies (repeatable), e.g. a candidate default")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if not phases or set(phases) - set(PHASES):
        parser.error(f"--phases {args.phases}: choose among {', '.join(PHASES)}")
    if args.small:
        data_args = ["dataset=synthetic", "dataset.n_rows=6000", "dataset.fraud_rate=0.03", "mlflow.log_plots=false"]
        study_args = ["model.n_estimators=10", "hydra.sweeper.n_trials=4", "model.n_estimators=choice(5,10)"]
        candidates = 4
    else:
        data_args, study_args, candidates = [], [], 20
    study_args = [*study_args, *args.set]
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "small": args.small,
                     "command": " ".join(["python -m tests.benchmark.peer", *sys.argv[1:]]),
                     "cores": os.cpu_count()}

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))

    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        store = Path(tmp)
        for phase in phases:
            if phase == "peer":
                results["peer"] = halving_peer(data_args, candidates, -1)
            elif phase == "serial":
                results["serial"] = study(store, "bench-serial", data_args, *study_args)
            elif phase == "parallel":
                results["parallel"] = study(store, "bench-parallel", data_args, *study_args, "model.n_jobs=1",
                                            workers=2)
            elif phase == "converged":
                results["converged"] = study(store, "bench-converged", data_args, *study_args,
                                             "hydra.sweeper.stop_when_converged=true")
            elif phase == "rescore":
                bests = {k: r["best_params"] for k, r in results.items()
                         if isinstance(r, dict) and r.get("best_params")}
                seen: dict[str, dict] = {}
                for key, params in bests.items():
                    label = json.dumps({k: str(params[k]) for k in KEYS})
                    seen.setdefault(label, rescore(data_args, params))
                    results.setdefault("rescored", {})[key] = seen[label]
            print(f"{phase}: done", file=sys.stderr, flush=True)
            save()
    print(render(results))
    save()
    return 0


def render(r: dict) -> str:
    """A Markdown table: one row per phase run, its wall, trials, best and the best re-scored on other folds."""
    lines = [f"Run of {r['date']} ({'small synthetic' if r['small'] else 'real data'}, {r['cores']} cores): "
             f"`{r['command']}`", "",
             "| | wall (s) | trials (complete) | best, its folds: AP ± std | best params (trees, depth, split, leaf) "
             "| best on other folds: AP ± std | CPU busy |", "|---|---|---|---|---|---|---|"]
    names = {"peer": "HalvingRandomSearchCV (peer)", "serial": "ours, one trial at a time",
             "parallel": "ours, two workers x one core", "converged": "ours, stop_when_converged=true"}
    for key, name in names.items():
        if key not in r:
            continue
        x, again = r[key], r.get("rescored", {}).get(key)
        trials = f"{x['n_trials']} ({x['n_complete']})" if "n_trials" in x else \
            " -> ".join(f"{c} x {n:,} rows" for c, n in zip(x["candidates_per_iteration"], x["rows_per_iteration"],
                                                             strict=True))
        best = f"{x['best']:.4f}" + (f" ± {x['best_std']:.4f}" if x.get("best_std") is not None else "")
        params = ", ".join(str(x["best_params"][k]) for k in KEYS)
        other = f"{again['ap']:.4f} ± {again['std']:.4f}" if again else "-"
        lines.append(f"| {name} | {x['wall']:.0f} | {trials} | {best} | {params} | {other} | "
                     f"{x['cpu_utilisation']:.0%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
