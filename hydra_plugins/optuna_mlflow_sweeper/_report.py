"""What the sweep tells people as it goes and at its end: the start line, one progress line per trial, the final
table, the results file and where to look. Every objective value is shown with its spread when the task returns
one (the pure helpers: _trials)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Optional

from mlflow.entities import Metric, RunTag
from mlflow.utils.time import get_current_time_millis
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from ._context import FAIL_REASON_ATTR, NOTE_ATTR, RUN_ATTR, START_ATTR, FailReason
from ._output import result, say
from ._plots import log_plots
from ._redact import redact
from ._state import RETURNED_ATTR, StopReason, SweepState
from ._trials import (
    FINISHED,
    best_of,
    chosen,
    counts,
    partial,
    shown,
    signed,
    spread_of,
    verdict,
    vs_start,
    with_spread,
)
from ._where import how_to_open

RESULTS_FILE = "optimization_results.yaml"


def _spread(state: SweepState, trial: Optional[FrozenTrial]) -> Optional[float]:
    return spread_of(trial, state.settings.objective.spread)


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


def finish(state: SweepState, stop_reason: StopReason) -> dict[str, Any]:
    """The parent run's counts and plots, the results file and the final table."""
    trials = state.study.get_trials(deepcopy=False)
    number = counts(trials)
    if not state.runs.down:
        for key, value in number.items():
            state.runs.client.log_metric(state.runs.parent_id, f"n_trials_{key[2:]}", value)
        if state.settings.log_plots:
            log_plots(state)
    return write_results(state, stop_reason)


def write_results(state: SweepState, stop_reason: StopReason) -> dict[str, Any]:
    trials = state.study.get_trials(deepcopy=False)
    s = state.settings
    best = best_of(trials, s.objective.direction)
    results: dict[str, Any] = {
        "study_name": state.study.study_name, "storage": redact(state.storage_url),
        "parent_run_id": state.runs.parent_id, "tracking_uri": redact(s.tracking_uri), "status": stop_reason.value,
        "objective": s.objective.name, "direction": s.objective.direction, "n_trials": s.n_trials, **counts(trials),
        "pinned_params": shown(state.space.pinned),
        "best_params": dict(best.params) if best else None, "best_value": best.value if best else None,
        "best_trial_number": best.number if best else None,
        "best_run_id": best.user_attrs.get(RUN_ATTR) if best else None,
    }
    spread = _spread(state, best) if best is not None else None
    if spread is not None:
        results["best_value_spread"] = spread
    found = vs_start(best, s.baseline) if best is not None else None
    if found is not None:  # the best trial's objective minus the configured model's, paired on the same rows
        results["best_vs_configured"] = {"diff": found[0], "ci_low": found[1], "ci_high": found[2]}
    pick = chosen(trials, s.objective.direction, s.baseline)
    results["final_trial_number"] = pick.number if pick is not None else None
    if best is not None and best.user_attrs.get(RETURNED_ATTR):  # everything its job returned (e.g. a threshold)
        results["best_returned"] = {k: best.user_attrs[k] for k in best.user_attrs[RETURNED_ATTR]
                                    if k in best.user_attrs}
    save_results(state, results)
    print_table(state, trials)
    return results


def save_results(state: SweepState, results: dict[str, Any]) -> None:
    state.out_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(results), state.out_dir / RESULTS_FILE)


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
    paired = "vs configured [95%]" if s.baseline.diff else ""
    lines = [f"{'trial':>5}  {'state':8}  {head:>20}  {paired:>30}  {'pruned at':>22}  "
             + "  ".join(f"{c:>17}" for c in short)]
    for t in rows:
        if t.user_attrs.get(FAIL_REASON_ATTR) == FailReason.SURPLUS:
            continue
        value = t.value if t.state == TrialState.COMPLETE else None
        found = vs_start(t, s.baseline) if s.baseline.diff and value is not None else None
        evidence = ("(configured)" if t.user_attrs.get(START_ATTR) else signed(found)) if found else ""
        lines.append(f"{t.number:>5}  {t.state.name:8}  {with_spread(value, _spread(state, t)):>20}  {evidence:>30}  "
                     f"{partial(t):>22}  " + "  ".join(f"{_param(t.params.get(k, '-')):>17}" for k in keys))
    best = best_of(trials, s.objective.direction)
    summary = (f"best: trial {best.number}, {s.objective.name} {with_spread(best.value, _spread(state, best))}"
               if best else "no trial completed")
    result("\n".join(["", f"study {state.study.study_name} ({redact(state.storage_url)})", *lines, summary,
                      f"results: {state.out_dir / RESULTS_FILE}"]))


def where_to_look(state: SweepState) -> None:
    """The sweep's last lines: how to open its parent run in the MLflow UI, and whether the search beat the
    configured values with confidence."""
    look = how_to_open(state.settings.tracking_uri, state.runs.experiment_id, state.runs.parent_id)
    result("\n".join(["the study in the MLflow UI (its parent run):", *[f"  {line}" for line in look]]))
    s = state.settings
    line = verdict(state.study.get_trials(deepcopy=False), s.objective.direction, s.baseline, s.objective.name)
    if line:
        result(line)


def _param(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
