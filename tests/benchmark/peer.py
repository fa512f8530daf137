"""Time to the best model: our default study against scikit-learn's successive halving, one trial at a time against
two side by side, and the stopping rule against the full study, in one run on one machine.

    python -m tests.benchmark.peer --json peer.json   # the real data: about two hours on 2 cores
    python -m tests.benchmark.peer --small            # small synthetic data in a minute (the test suite runs it)

Phases (``--phases``, all by default), each into a private temporary store:
- peer: ``HalvingRandomSearchCV`` over the default search space, 20 candidates, rows as the resource (factor 3:
  1/9, 1/3, all of the training split), 3-fold stratified CV, average precision, both cores per fit, no tracking;
- serial: ``python -m src.train --multirun registry.enabled=false`` (the default study: 20 trials, successive
  halving on the row looks, one trial at a time with both cores);
- parallel: the same study run by two workers on one storage at once, one core per fit (``model.n_jobs=1``);
- converged: the default study with ``hydra.sweeper.stop_when_converged=true``;
- wide_peer, wide: the same comparison over a wide space where a gradient exists (WIDE: 2-layer to unlimited trees,
  leaves of up to 100 rows), ours with ``hydra.sweeper.start_from_config=false`` (nothing handed to it);
- looks: trials of the wide space run to the end (no pruner) with the row looks recorded: how well each look
  ranks the trials (Spearman's correlation with the final objective);
- after the table, for our default and wide studies: the best trial they had by half the peer's wall and by half
  its fitting work (the target: as good a model in half the time), had they been stopped there;
- rescore: each phase's best configuration (and those halves' bests) scored on other folds (3-fold CV of the
  training split with another shuffle seed), so that "a tie" is judged on folds no search has seen. The test split
  is never used.

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

from tests.benchmark.speed import ROOT, best_within, sweep_stats

PHASES = ("peer", "serial", "parallel", "converged", "wide_peer", "wide", "looks", "rescore")
# A wide space where a gradient exists (shallow trees and big leaves lose AP): the search has something to find.
WIDE = {"model.n_estimators": "range(50,501,step=50)", "model.max_depth": "choice(2,3,4,6,8,12,16,24,none)",
        "model.min_samples_split": "range(2,101)", "model.min_samples_leaf": "range(1,101)"}
KEYS = ("n_estimators", "max_depth", "min_samples_split", "min_samples_leaf")
PAIRS = {"serial": "peer", "wide": "wide_peer"}  # our study and the peer it is held against


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _composed(data_args: list[str]):
    from tests.benchmark.speed import _composed as composed

    return composed(data_args)


def _space(params: dict | None = None) -> dict[str, list]:
    """A search space as scikit-learn's searches take it: the default one (conf/search_space) or ``params``, in
    Hydra's grammar, expanded by Hydra's parser."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if params is None:
        params = yaml.safe_load((ROOT / "conf/search_space/random_forest.yaml").read_text())["hydra"]["sweeper"][
            "params"]
    parser = OverridesParser.create()
    space = {}
    for key, expr in params.items():
        value = parser.parse_override(f"{key}={expr}").value()
        values = list(value.list) if hasattr(value, "list") else list(range(int(value.start), int(value.stop),
                                                                             int(value.step)))
        space[key.split(".")[-1]] = [None if v in ("none", None) else v for v in values]
    return space


def halving_peer(data_args: list[str], candidates: int, n_jobs: int, params: dict | None = None) -> dict:
    """scikit-learn's successive halving over rows, with our model's fixed settings and the same training split."""
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.model_selection import HalvingRandomSearchCV, StratifiedKFold

    from src.model.forest import build_model

    cfg, data, parts = _composed(data_args)
    x, y = data.X[parts.train], data.y[parts.train]
    space = _space(params)
    model = build_model(cfg.model)
    model.set_params(n_jobs=n_jobs)
    search = HalvingRandomSearchCV(model, space, n_candidates=candidates, factor=3, resource="n_samples",
                                   min_resources=len(y) // 9, cv=StratifiedKFold(3, shuffle=True, random_state=42),
                                   scoring="average_precision", refit=False, random_state=0)
    cpu, start = _cpu(), time.perf_counter()
    search.fit(x, y)
    wall = time.perf_counter() - start
    best = {k: search.best_params_[k] for k in KEYS}
    # Fitting work as our studies count it (speed.fitting_work): each fit grows its trees on 2/3 of its iteration's
    # rows, one of our folds on 2/3 of all of them.
    n_splits = search.cv.get_n_splits()
    work = sum(params.get("n_estimators", model.n_estimators) * n_splits * rows / len(y)
               for params, rows in zip(search.cv_results_["params"], search.cv_results_["n_resources"], strict=True))
    return {"wall": wall, "tree_folds": float(work),
            "cpu_utilisation": (_cpu() - cpu) / wall / (os.cpu_count() or 1), "best_params": best,
            "best": float(search.best_score_), "rows_per_iteration": [int(n) for n in search.n_resources_],
            "candidates_per_iteration": [int(n) for n in search.n_candidates_]}


def study(store: Path, name: str, data_args: list[str], *extra: str, workers: int = 1) -> dict:
    """Our default study from the command line; with ``workers`` > 1, that many processes on one storage at once."""
    tracking = f"sqlite:///{store / 'mlflow.db'}"
    common = ["--multirun", *data_args, f"mlflow.tracking_uri={tracking}", "registry.enabled=false",
              f"hydra.sweeper.storage=sqlite:///{store / 'optuna.db'}", f"hydra.sweeper.study_name={name}", *extra]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cpu, start, launched = _cpu(), time.perf_counter(), time.time()
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
    stats.update(wall=wall, launched=launched, workers=workers,
                 cpu_utilisation=(_cpu() - cpu) / wall / (os.cpu_count() or 1),
                 stopped=[line for line in stderr.splitlines() if line.startswith("stopping early:")],
                 progress=[line for line in stderr.splitlines() if line.startswith("trial ")])
    return stats


def looks(store: Path, data_args: list[str], study_args: list[str], n: int) -> dict:
    """How well each cheap look ranks the trials: ``n`` trials of the wide space run to the end (no pruner) with the
    row looks recorded; Spearman's rank correlation of each step's value with the final objective."""
    import optuna
    from scipy import stats

    name = "bench-looks"
    stats_ = study(store, name, data_args, *study_args, f"hydra.sweeper.n_trials={n}", "hydra.sweeper.pruner=none",
                   "hydra.sweeper.start_from_config=false")
    trials = [t for t in optuna.load_study(study_name=name, storage=f"sqlite:///{store / 'optuna.db'}").trials
              if t.state == optuna.trial.TrialState.COMPLETE]
    finals = [t.value for t in trials]
    steps = sorted(set.intersection(*(set(t.intermediate_values) for t in trials))) if trials else []
    labels = {1: "1/9 of fold 1's rows", 3: "1/3 of fold 1's rows", 9: "fold 1", 18: "folds 1-2 (mean)"}
    rho = {}
    for step in steps:
        if step in labels:
            value = stats.spearmanr([t.intermediate_values[step] for t in trials], finals).statistic
            rho[labels[step]] = None if value != value else float(value)
    return {**stats_, "spearman_with_final": rho, "n_complete_looks": len(trials)}


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
    parser.add_argument("--add-to", default=None, metavar="JSON",
                        help="an earlier run's results: keep its phases and add these (rescore then re-scores the "
                             "bests of both); phases that time nothing (looks, rescore) can so run apart")
    parser.add_argument("--set", action="append", default=[], metavar="OVERRIDE",
                        help="an override for every one of our studies (repeatable), e.g. a candidate default")
    args = parser.parse_args()
    phases = [p for p in args.phases.split(",") if p]
    if not phases or set(phases) - set(PHASES):
        parser.error(f"--phases {args.phases}: choose among {', '.join(PHASES)}")
    wide_args = [f"{k}={v}" for k, v in WIDE.items()]
    if args.small:
        data_args = ["dataset=synthetic", "dataset.n_rows=6000", "dataset.fraud_rate=0.03", "mlflow.log_plots=false"]
        study_args = ["model.n_estimators=10", "hydra.sweeper.n_trials=4", "model.n_estimators=choice(5,10)"]
        candidates, look_trials = 4, 4
        wide_args = [a for a in wide_args if not a.startswith("model.n_estimators")]
    else:
        data_args, study_args, candidates, look_trials = [], [], 20, 15
    study_args = [*study_args, *args.set]
    results: dict = {"date": datetime.now(UTC).isoformat(timespec="minutes"), "small": args.small,
                     "command": " ".join(["python -m tests.benchmark.peer", *sys.argv[1:]]),
                     "cores": os.cpu_count()}
    if args.add_to:
        earlier = json.loads(Path(args.add_to).read_text())
        if earlier.get("small") != args.small:
            parser.error(f"--add-to {args.add_to}: its data ({'small' if earlier.get('small') else 'real'}) is not "
                         f"this run's")
        results = {**earlier, "added": {k: results[k] for k in ("date", "command")}}

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
            elif phase == "wide_peer":
                results["wide_peer"] = halving_peer(data_args, candidates, -1, WIDE)
            elif phase == "wide":
                results["wide"] = study(store, "bench-wide", data_args, *study_args, *wide_args,
                                        "hydra.sweeper.start_from_config=false")
            elif phase == "looks":
                results["looks"] = looks(store, data_args, [*study_args, *wide_args], look_trials)
            elif phase == "rescore":
                bests = {k: r["best_params"] for k, r in results.items()
                         if isinstance(r, dict) and r.get("best_params")}
                bests.update({f"{k} {budget}": t["params"] for k, by in at_half(results).items()
                              for budget, t in by.items() if t})
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


def at_half(r: dict) -> dict[str, dict[str, dict | None]]:
    """Per study held against a peer in this run: its best complete trial by half the peer's wall and by half the
    peer's fitting work, had it been stopped there (the target: a model as good as the peer's in half its time)."""
    out = {}
    for ours, peer in PAIRS.items():
        if ours in r and peer in r and "trials" in r[ours] and "launched" in r[ours]:
            x, p = r[ours], r[peer]
            out[ours] = {"half wall": best_within(x["trials"], x["launched"], seconds=p["wall"] / 2),
                         "half work": best_within(x["trials"], x["launched"], tree_folds=p["tree_folds"] / 2)}
    return out


def render(r: dict) -> str:
    """A Markdown table: one row per phase run, its wall, trials, best and the best re-scored on other folds."""
    lines = [f"Run of {r['date']} ({'small synthetic' if r['small'] else 'real data'}, {r['cores']} cores): "
             f"`{r['command']}`", "",
             "| | wall (s) | trials (complete) | best, its folds: AP ± std | best params (trees, depth, split, leaf) "
             "| best on other folds: AP ± std | fitting work (tree-folds) | CPU busy |",
             "|---|---|---|---|---|---|---|---|"]
    if "added" in r:
        lines[1:1] = ["", f"Phases added on {r['added']['date']}: `{r['added']['command']}`"]
    names = {"peer": "HalvingRandomSearchCV (peer)", "serial": "ours, one trial at a time",
             "parallel": "ours, two workers x one core", "converged": "ours, stop_when_converged=true",
             "wide_peer": "wide space: HalvingRandomSearchCV (peer)",
             "wide": "wide space: ours (start_from_config=false)", "looks": "wide space: ours, unpruned (looks)"}
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
        work = f"{x['tree_folds']:,.0f}" if x.get("tree_folds") is not None else "-"
        lines.append(f"| {name} | {x['wall']:.0f} | {trials} | {best} | {params} | {other} | {work} | "
                     f"{x['cpu_utilisation']:.0%} |")
    for key, by in at_half(r).items():
        lines.append("")
        peer = r[PAIRS[key]]
        spans = {"half wall": f"half the peer's wall ({peer['wall'] / 2:.0f} s)",
                 "half work": f"half the peer's fitting work ({peer['tree_folds'] / 2:,.0f} tree-folds)"}
        for budget, t in by.items():
            again = r.get("rescored", {}).get(f"{key} {budget}")
            lines.append(f"- {names[key]}, stopped at {spans[budget]}: " + (
                "no complete trial by then" if t is None else
                f"trial {t['number']} ({', '.join(str(t['params'][k]) for k in KEYS)}), {t['value']:.4f} on its "
                f"folds" + (f", {again['ap']:.4f} ± {again['std']:.4f} on other folds" if again else "") +
                f" (ended after {t['ended_after']:.0f} s and {t['tree_folds_by_then']:,.0f} tree-folds)"))
    if "looks" in r:
        rho = r["looks"]["spearman_with_final"]
        lines += ["", f"Rank correlation (Spearman) with the final objective, {r['looks']['n_complete_looks']} "
                      f"unpruned trials of the wide space: " + ", ".join(
                          f"{k} {v:+.2f}" if v is not None else f"{k} -" for k, v in rho.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
