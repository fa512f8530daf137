"""Pure functions over a study's trials: which are finished, which is best, how a value is shown. No I/O: the
report, the summary, the final stage and the tests all read the trials through these."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional

from optuna.trial import FrozenTrial, TrialState

from ._context import FAIL_REASON_ATTR, PARTIAL_ATTR, FailReason
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
