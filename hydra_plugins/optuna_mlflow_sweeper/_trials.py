"""Pure functions over a study's trials: which are finished, which is best, how a value is shown. No I/O: the
report, the summary, the final stage and the tests all read the trials through these."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

from optuna.trial import FrozenTrial, TrialState

from ._context import FAIL_REASON_ATTR, PARTIAL_ATTR, START_ATTR, FailReason
from ._redact import redact

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards n_trials


def best_of(trials: Sequence[FrozenTrial], direction: str) -> Optional[FrozenTrial]:
    """The best COMPLETE trial; ties go to the earliest."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    sign = 1.0 if direction == "maximize" else -1.0
    return max(complete, key=lambda t: (sign * t.value, -t.number)) if complete else None


def counts(trials: Sequence[FrozenTrial]) -> dict[str, int]:
    """Complete, pruned and failed trials (a surplus trial, asked for when the study was full, is none of them)."""
    return {"n_complete": sum(t.state == TrialState.COMPLETE for t in trials),
            "n_pruned": sum(t.state == TrialState.PRUNED for t in trials),
            "n_failed": sum(t.state == TrialState.FAIL and t.user_attrs.get(FAIL_REASON_ATTR) != FailReason.SURPLUS
                            for t in trials)}


def with_spread(value: Optional[float], spread: Any) -> str:
    """``0.8370 ± 0.0455``, or the value alone when the spread is missing or not a finite number."""
    if value is None:
        return "-"
    ok = isinstance(spread, (int, float)) and not isinstance(spread, bool) and math.isfinite(spread)
    fmt = "{:.4f}" if abs(value) < 100 else "{:,.1f}"  # a score to 4 decimals, an amount (of money, say) to 1
    return f"{fmt.format(value)} ± {fmt.format(spread)}" if ok else fmt.format(value)


def spread_of(trial: Optional[FrozenTrial], key: Optional[str]) -> Optional[float]:
    """The companion value the task returned under ``key`` (kept on the trial), if any."""
    return trial.user_attrs.get(key) if trial is not None and key else None


def bare_names(keys: Sequence[str]) -> dict[str, str]:
    """``model.max_depth`` -> ``max_depth``; the full key where two bare names would collide."""
    short = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (b if short.count(b) == 1 else k) for k, b in zip(keys, short, strict=True)}


def shown(pinned: dict[str, Any]) -> dict[str, Any]:
    """Values as printed and logged: a URL's secrets (a tracking URI's, say) replaced by ***."""
    return {k: redact(v) if isinstance(v, str) else v for k, v in pinned.items()}


def partial(trial: FrozenTrial) -> str:
    """A pruned trial's last intermediate value and where it was taken (not comparable with finished values)."""
    where_value = trial.user_attrs.get(PARTIAL_ATTR)
    if trial.state != TrialState.PRUNED or not where_value:
        return ""
    where, value = where_value
    return f"{value:.4f} after {where}"


def start_trial(trials: Sequence[FrozenTrial]) -> Optional[FrozenTrial]:
    """The complete trial of the configured values (the sweeper's start point), if any."""
    return next((t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get(START_ATTR)), None)


def vs_start(trial: FrozenTrial, baseline: Any) -> Optional[tuple[float, float, float]]:
    """(difference, low, high) of ``trial`` against the start trial, as its job returned them, or None."""
    keys = (baseline.diff, baseline.low, baseline.high)
    values = [trial.user_attrs.get(k) if k else None for k in keys]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return float(values[0]), float(values[1]), float(values[2])


def beats_start(trial: FrozenTrial, baseline: Any, direction: str) -> bool:
    """Better than the configured values with confidence: the whole interval on the better side of 0."""
    found = vs_start(trial, baseline)
    if found is None or trial.user_attrs.get(START_ATTR):
        return False
    return found[1] > 0 if direction == "maximize" else found[2] < 0


def chosen(trials: Sequence[FrozenTrial], direction: str, baseline: Any) -> Optional[FrozenTrial]:
    """The trial the final stage runs: the best of those that beat the configured values with confidence, else the
    configured values' own trial (a sweep never sells noise as progress); without a baseline, the best."""
    start = start_trial(trials)
    if start is None or not (baseline.diff and baseline.low and baseline.high):
        return best_of(trials, direction)
    return best_of([t for t in trials if beats_start(t, baseline, direction)], direction) or start


def verdict(trials: Sequence[FrozenTrial], direction: str, baseline: Any, name: str) -> Optional[str]:
    """The sweep's last result line: whether the best beat the configured values with confidence."""
    start, pick = start_trial(trials), chosen(trials, direction, baseline)
    if start is None or pick is None or not baseline.diff:
        return None
    if pick.number == start.number:
        best = best_of(trials, direction)
        found = vs_start(best, baseline) if best is not None and best.number != start.number else None
        shown = (f" (the best, trial {best.number}: {signed(found)})" if found and best is not None else "")
        return (f"no trial beat the configured model (trial {start.number}) with confidence in {name}{shown}: it is "
                f"the one packaged")
    return f"trial {pick.number}: {signed(vs_start(pick, baseline))} {name} over the configured model (trial " \
           f"{start.number})"


def signed(found: Optional[tuple[float, float, float]]) -> str:
    if found is None:
        return "no paired evidence"
    fmt = "{:+.4f}" if max(abs(v) for v in found) < 100 else "{:+,.0f}"
    return f"{fmt.format(found[0])} [{fmt.format(found[1])}, {fmt.format(found[2])}]"
