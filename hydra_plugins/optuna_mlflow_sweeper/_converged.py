"""Stop when more trials cannot help (``hydra.sweeper.stop_when_converged``).

The rule, in one sentence: once at least ``min_complete`` distinct results are in, each finished trial's difference
from the configured values (``baseline``: a complete trial's paired difference as its job returned it, a pruned
trial's value at its last step minus the configured trial's at that step) is taken as a normal sample, and the study
stops when the predictive probability (Student's t) that one more trial's difference exceeds the best complete
trial's by more than the paired standard error (the best's interval half-width over 1.96; while only the configured
trial is complete, its own standard error) falls below ``chance``.

Invariants: the rule reads only finished trials (a running one's value is unknown), so every worker of a study
reaches the same verdict; trials with the same result (a twin that took an earlier trial's forests) count once;
values that happen to be all equal do not make the rule certain (their spread is taken as the paired standard
error, not 0); a pruned trial's step values count only when they are the objective's own (the configured trial's
last step value is its final value), e.g. AP at each look, not AP while the objective is money.
Without a baseline (a task that returns no paired difference), the trials' values themselves are the sample and the
best trial's returned uncertainty is the margin, as before.
Why Student's t: with 5-20 values the sample's spread is itself uncertain, and the t predictive interval is the
textbook answer for "where will the next draw from this sample's population fall".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from optuna.trial import FrozenTrial, TrialState
from scipy import stats

from ._trials import start_trial, vs_start

Z95 = 1.959964  # a 95 % interval is +- this many standard errors


@dataclass(frozen=True)
class Verdict:
    chance: float  # predictive probability that the next trial beats the best by more than the margin
    margin: float  # the paired standard error (or, without a baseline, the best trial's own uncertainty)
    n_complete: int  # distinct values in the sample
    best_number: int
    paired: bool = False

    def reason(self, threshold: float) -> str:
        what = "the paired standard error" if self.paired else "its own uncertainty"
        return (f"the chance that one more trial beats the best (trial {self.best_number}) by more than {what} "
                f"({self.margin:.4f}) is {self.chance:.1%} < {threshold:.0%}, from {self.n_complete} distinct results")


def chance_to_beat(values: Sequence[float], best: float, margin: float) -> float:
    """P(next > best + margin) for a next value drawn as the sample's values (normal, t predictive). Pure;
    maximisation (negate the values and the best to minimise). A sample of equal values takes the margin as its
    spread."""
    n = len(values)
    if n < 2:
        return 1.0
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    sd = sd if sd > 0 else margin
    gap = best + margin - mean
    if sd == 0.0:  # no spread and no margin: a gain has never been seen
        return 0.0 if gap > 0 else 1.0
    return float(stats.t.sf(gap / (sd * math.sqrt(1.0 + 1.0 / n)), df=n - 1))


def _distinct(values: Sequence[tuple[Any, float]]) -> list[float]:
    """One value per distinct result (a twin repeats an earlier trial's exactly)."""
    return [v for _, v in dict.fromkeys(values)]


def paired_verdict(trials: Sequence[FrozenTrial], direction: str, baseline: Any, min_complete: int,
                   uncertainty: Optional[str] = None) -> Optional[Verdict]:
    start = start_trial(trials)
    if start is None:
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    complete = [(t, vs_start(t, baseline)) for t in trials if t.state == TrialState.COMPLETE]
    complete = [(t, found) for t, found in complete if found is not None]
    if not complete:
        return None
    sample = [(("complete", found[0]), sign * found[0]) for _, found in complete]
    steps = start.intermediate_values
    own = bool(steps) and math.isclose(steps[max(steps)], float(start.value), rel_tol=0, abs_tol=1e-9)
    if own:  # pruned trials: their last step against the configured trial's at that step
        for t in trials:
            if t.state == TrialState.PRUNED and t.intermediate_values:
                step = max(t.intermediate_values)
                if step in steps:
                    diff = t.intermediate_values[step] - steps[step]
                    sample.append(((step, diff), sign * diff))
    values = _distinct(sample)
    if len(values) < max(2, min_complete):
        return None
    best_t, best = max(complete, key=lambda tf: (sign * tf[1][0], -tf[0].number))
    widths = [(f[2] - f[1]) / (2 * Z95) for t, f in complete if t.number != start.number and f[2] > f[1]]
    own_width = (best[2] - best[1]) / (2 * Z95)
    margin = own_width if own_width > 0 else (sorted(widths)[len(widths) // 2] if widths else 0.0)
    if margin == 0.0:  # no paired interval yet (only the configured trial is complete): its own standard error
        raw = best_t.user_attrs.get(uncertainty) if uncertainty else None
        margin = float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) and raw >= 0 else 0.0
    return Verdict(chance_to_beat(values, sign * best[0], margin), margin, len(values), best_t.number, paired=True)


def verdict(trials: Sequence[FrozenTrial], direction: str, uncertainty: Optional[str], min_complete: int,
            baseline: Any = None) -> Optional[Verdict]:
    """The rule's numbers once there are enough distinct results (else None). Pure."""
    if baseline is not None and baseline.diff and baseline.low and baseline.high:
        found = paired_verdict(trials, direction, baseline, min_complete, uncertainty)
        if found is not None or start_trial(trials) is not None:
            return found
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1.0 if direction == "maximize" else -1.0
    values = _distinct([(t.value, sign * t.value) for t in complete])
    if len(values) < max(2, min_complete):
        return None
    best = max(complete, key=lambda t: (sign * t.value, -t.number))
    raw = best.user_attrs.get(uncertainty) if uncertainty else None
    margin = float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) and raw >= 0 else 0.0
    return Verdict(chance_to_beat(values, sign * best.value, margin), margin, len(values), best.number)


def should_stop(trials: Sequence[FrozenTrial], direction: str, uncertainty: Optional[str], min_complete: int,
                threshold: float, baseline: Any = None) -> Optional[str]:
    """The one-line reason to stop, or None to go on. Pure."""
    found = verdict(trials, direction, uncertainty, min_complete, baseline)
    if found is None or found.chance >= threshold:
        return None
    return found.reason(threshold)
