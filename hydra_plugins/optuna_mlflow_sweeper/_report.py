"""What the sweep tells people: progress lines, the final table, the results file, the parent run's summary and
Optuna's plots. Every objective value is shown with its spread when the task returns one."""

from __future__ import annotations

import logging
import math
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any, Optional

import optuna
from mlflow.entities import Metric, RunTag
from mlflow.utils.time import get_current_time_millis
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from ._job import FAIL_REASON_ATTR, NOTE_ATTR, PARTIAL_ATTR, RUN_ATTR, redact
from ._state import SweepState
from ._where import how_to_open

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
RESULTS_FILE = "optimization_results.yaml"


def say(text: str) -> None:
    """Progress and diagnostics: stderr."""
    print(text, file=sys.stderr, flush=True)


def result(text: str) -> None:
    """Results (the table, the best, where to look): stdout, so that `> log` keeps them."""
    print(text, flush=True)


def best_of(trials: Sequence[FrozenTrial], direction: str) -> Optional[FrozenTrial]:
    """The best COMPLETE trial; ties go to the earliest. Pure."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    sign = 1.0 if direction == "maximize" else -1.0
    return max(complete, key=lambda t: (sign * t.value, -t.number)) if complete else None


def with_spread(value: Optional[float], spread: Optional[float]) -> str:
    if value is None:
        return "-"
    ok = isinstance(spread, (int, float)) and math.isfinite(spread)
    return f"{value:.4f} ± {spread:.4f}" if ok else f"{value:.4f}"


def _spread(state: SweepState, trial: FrozenTrial) -> Optional[float]:
    key = state.settings.objective.spread
    return trial.user_attrs.get(key) if key else None


def counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    return {"n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "n_failed": sum(t.state == TrialState.FAIL and t.user_attrs.get(FAIL_REASON_ATTR) != "surplus"
                            for t in trials)}


def start_line(state: SweepState) -> None:
    trials = state.study.get_trials(deepcopy=False)
    finished = sum(t.state in FINISHED for t in trials)
    s = state.settings
    pinned = ", ".join(f"{k}={v}" for k, v in shown(state.space.pinned).items()) or "none"
    say(f"study {state.study.study_name} in {redact(state.storage_url)}: {finished}/{s.n_trials} trials finished so "
        f"far; sampler {s.sampler}, pruner {s.pruner}; pinned: {pinned}")
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    if waiting:
        start = ", ".join(f"{k}={v}" for k, v in waiting[0].system_attrs.get("fixed_params", {}).items())
        say(f"first trial: the configured values {start} (hydra.sweeper.start_from_config=false to skip)")


def shown(pinned: dict[str, Any]) -> dict[str, Any]:
    """Pinned values as printed and logged: a URL's secrets (a tracking URI's, say) replaced by ***."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in pinned.items()}


def progress(state: SweepState, number: int, label: str, value: Optional[float], note: str = "") -> None:
    """One line per finished trial, and the parent run's best-so-far."""
    trials = state.study.get_trials(deepcopy=False)  # fresh: the trial's own attributes were set by its task
    s = state.settings
    best = best_of(trials, s.objective.direction)
    if best is not None and not state.runs.down:  # one write for the parent's best-so-far
        tags = [RunTag("best_trial_run_id", str(best.user_attrs.get(RUN_ATTR, ""))),
                RunTag("best_trial_number", str(best.number))] if label == "COMPLETE" and best.number == number else []
        state.runs.client.log_batch(state.runs.parent_id, metrics=[Metric(
            f"best_{s.objective.name}", round(best.value, 4), get_current_time_millis(), number)], tags=tags)
    this = next((t for t in trials if t.number == number), None)
    note = note or (str(this.user_attrs.get(NOTE_ATTR, "")) if this is not None else "")
    finished = sum(t.state in FINISHED for t in trials)
    text = with_spread(value, _spread(state, this) if this is not None else None)
    best_txt = f"{with_spread(best.value, _spread(state, best))} (trial {best.number})" if best is not None else "-"
    extra = "".join(f"  {k} {this.user_attrs[k]:.4g}" for k in s.progress_metrics
                    if this is not None and isinstance(this.user_attrs.get(k), (int, float)))
    elapsed = time.monotonic() - state.started
    say(f"trial {number:3d} {label:8s} value {text:>7s}  best {best_txt}  {finished}/{s.n_trials} finished  "
        f"elapsed {elapsed:6.1f} s{extra}" + (f"  [{note[:120]}]" if note else ""))


def finish(state: SweepState, stop_reason: str) -> dict[str, Any]:
    """The parent run's counts and plots, the results file and the final table."""
    trials = state.study.get_trials(deepcopy=False)
    number = counts(trials)
    if not state.runs.down:
        for key, value in number.items():
            state.runs.client.log_metric(state.runs.parent_id, f"n_trials_{key[2:]}", value)
        log_plots(state)
    return write_results(state, stop_reason)


def write_results(state: SweepState, stop_reason: str) -> dict[str, Any]:
    trials = state.study.get_trials(deepcopy=False)
    s = state.settings
    best = best_of(trials, s.objective.direction)
    results: dict[str, Any] = {
        "study_name": state.study.study_name, "storage": redact(state.storage_url),
        "parent_run_id": state.runs.parent_id, "tracking_uri": redact(s.tracking_uri), "status": stop_reason,
        "objective": s.objective.name, "direction": s.objective.direction, "n_trials": s.n_trials, **counts(trials),
        "pinned_params": shown(state.space.pinned),
        "best_params": dict(best.params) if best else None, "best_value": best.value if best else None,
        "best_trial_number": best.number if best else None,
        "best_run_id": best.user_attrs.get(RUN_ATTR) if best else None,
    }
    spread = _spread(state, best) if best is not None else None
    if spread is not None:
        results["best_value_spread"] = spread
    save_results(state, results)
    print_table(state, trials)
    return results


def save_results(state: SweepState, results: dict[str, Any]) -> None:
    state.out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(results), state.out_dir / RESULTS_FILE)


def _partial(trial: FrozenTrial) -> str:
    where_value = trial.user_attrs.get(PARTIAL_ATTR)
    if trial.state != TrialState.PRUNED or not where_value:
        return ""
    where, value = where_value
    return f"{value:.4f} after {where}"


def print_table(state: SweepState, trials: Sequence[FrozenTrial]) -> None:
    """Every trial, best first; the value column holds only finished trials' values (comparable), a pruned
    trial's partial value is in its own column with where it was taken."""
    s = state.settings
    sign = 1.0 if s.objective.direction == "maximize" else -1.0
    rows = sorted(trials, key=lambda t: (t.state != TrialState.COMPLETE, -sign * (t.value or 0.0)
                                         if t.state == TrialState.COMPLETE else 0.0, t.number))
    keys = list(state.space.distributions)
    short = [k.rsplit(".", 1)[-1] for k in keys]
    head = f"{s.objective.name}" + (" ± spread" if s.objective.spread else "")
    lines = [f"{'trial':>5}  {'state':8}  {head:>20}  {'pruned at':>22}  " + "  ".join(f"{c:>17}" for c in short)]
    for t in rows:
        if t.user_attrs.get(FAIL_REASON_ATTR) == "surplus":
            continue
        value = t.value if t.state == TrialState.COMPLETE else None
        lines.append(f"{t.number:>5}  {t.state.name:8}  {with_spread(value, _spread(state, t)):>20}  "
                     f"{_partial(t):>22}  " + "  ".join(f"{_param(t.params.get(k, '-')):>17}" for k in keys))
    best = best_of(trials, s.objective.direction)
    summary = (f"best: trial {best.number}, {s.objective.name} {with_spread(best.value, _spread(state, best))}"
               if best else "no trial completed")
    result("\n".join(["", f"study {state.study.study_name} ({redact(state.storage_url)})", *lines, summary,
                      f"results: {state.out_dir / RESULTS_FILE}"]))


def where_to_look(state: SweepState) -> None:
    """The sweep's last lines: how to open its parent run in the MLflow UI."""
    look = how_to_open(state.settings.tracking_uri, state.runs.experiment_id, state.runs.parent_id)
    result("\n".join(["the study in the MLflow UI (its parent run):", *[f"  {line}" for line in look]]))


def _param(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


FEW_TRIALS = 10  # below this many complete trials, importances are a guess


def _readable_copy(state: SweepState) -> optuna.Study:
    """The study in memory with bare parameter names (``max_depth``, not ``model.max_depth``: axis labels are cut
    to a dozen characters) and without parameters every trial shares (an axis of one value says nothing)."""
    from ._summary import bare_names

    trials = [t for t in state.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    varying = [k for k in state.space.distributions if len({repr(t.params.get(k)) for t in trials}) > 1]
    names = bare_names(varying)
    copy = optuna.create_study(direction=state.settings.objective.direction)
    copy.add_trials([optuna.trial.create_trial(
        params={names[k]: t.params[k] for k in varying if k in t.params},
        distributions={names[k]: t.distributions[k] for k in varying if k in t.distributions},
        value=t.value) for t in trials])
    return copy


def _integer_axes(fig: Any, study: optuna.Study) -> None:
    """Integer parameters on integer ticks (a parallel-coordinate axis is a twin axis per parameter)."""
    from matplotlib.ticker import MaxNLocator
    from optuna.distributions import IntDistribution

    integer = {k for t in study.trials for k, d in t.distributions.items() if isinstance(d, IntDistribution)}
    labels = [label.get_text() for label in fig.axes[0].get_xticklabels()]
    for ax, name in zip(fig.axes[1:], labels[1:], strict=False):
        if name in integer:
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def log_plots(state: SweepState) -> None:
    """Optuna's history, importances and parallel coordinates on the parent run, readable in the UI (bare names,
    integer axes, a note when few trials support the importances, 1000 x 650 px). Drawn inside a style context:
    optuna.visualization.matplotlib switches the global style to ggplot, which later figures would inherit."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    study = _readable_copy(state)
    study.set_metric_names([state.settings.objective.name])
    n = len(study.trials)
    plots = {"optimization_history.png": ovm.plot_optimization_history}
    if n >= 2 and study.trials[0].params:
        plots["param_importances.png"] = ovm.plot_param_importances
        plots["parallel_coordinate.png"] = ovm.plot_parallel_coordinate
    for name, plot in plots.items():
        with plt.rc_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fig = None
            try:
                ax = plot(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.set_size_inches(10, 6.5)
                if name == "parallel_coordinate.png":
                    _integer_axes(fig, study)
                if name == "param_importances.png" and n < FEW_TRIALS:
                    title = fig.axes[0].get_title(loc="left")  # (Optuna's title is left-aligned)
                    fig.axes[0].set_title(f"{title}: from only {n} complete trials, a rough guess", loc="left")
                fig.tight_layout()
                state.runs.client.log_figure(state.runs.parent_id, fig, f"optuna/{name}")
            except (ValueError, RuntimeError, optuna.exceptions.OptunaError) as exc:  # e.g. no variation
                log.warning("optuna plot %s skipped: %s", name, exc)
            finally:
                if fig is not None:
                    plt.close(fig)
