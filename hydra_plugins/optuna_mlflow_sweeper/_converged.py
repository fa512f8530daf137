"""Stop when more trials cannot help (``hydra.sweeper.stop_when_converged``).

The rule, in one sentence: once at least ``min_complete`` trials are complete, their values are taken as a normal
sample, and the study stops when the predictive probability (Student's t with n - 1 degrees of freedom) that one
more trial's value beats the best by more than the best trial's own uncertainty falls below ``chance``.

Invariants: the rule reads only finished COMPLETE trials (a pruned trial's value is partial, a running one's
unknown), so every worker of a study reaches the same decision from the same trials; a task that returns no
uncertainty gets a margin of 0 (the rule then asks for any gain at all).
Why Student's t: with 5-20 trials the sample's spread is itself uncertain, and the t predictive interval is the
textbook answer for "where will the next draw from this sample's population fall".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from optuna.trial import FrozenTrial, TrialState
from scipy import stats


@dataclass(frozen=True)
class Verdict:
    chance: float  # predictive probability that the next trial beats the best by more than the margin
    margin: float  # the best trial's own uncertainty
    n_complete: int
    best_number: int

    def reason(self, threshold: float) -> str:
        return (f"the chance that one more trial beats the best (trial {self.best_number}) by more than its own "
                f"uncertainty ({self.margin:.4f}) is {self.chance:.1%} < {threshold:.0%}, from {self.n_complete} "
                f"complete trials")


def chance_to_beat(values: Sequence[float], best: float, margin: float) -> float:
    """P(next > best + margin) for a next value drawn as the sample's values (normal, t predictive). Pure;
    maximisation (negate the values and the best to minimise)."""
    n = len(values)
    if n < 2:
        return 1.0
    mean = math.fsum(values) / n
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    gap = best + margin - mean
    if sd == 0.0:  # every trial gave the same value: a gain above the margin has never been seen
        return 0.0 if gap > 0 else 1.0
    return float(stats.t.sf(gap / (sd * math.sqrt(1.0 + 1.0 / n)), df=n - 1))


def verdict(trials: Sequence[FrozenTrial], direction: str, uncertainty: Optional[str],
            min_complete: int) -> Optional[Verdict]:
    """The rule's numbers once there are ``min_complete`` complete trials (else None). Pure."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    if len(complete) < max(2, min_complete):
        return None
    sign = 1.0 if direction == "maximize" else -1.0
    best = max(complete, key=lambda t: (sign * t.value, -t.number))
    raw = best.user_attrs.get(uncertainty) if uncertainty else None
    margin = float(raw) if isinstance(raw, (int, float)) and math.isfinite(raw) and raw >= 0 else 0.0
    values = [sign * t.value for t in complete]
    return Verdict(chance_to_beat(values, sign * best.value, margin), margin, len(complete), best.number)


def should_stop(trials: Sequence[FrozenTrial], direction: str, uncertainty: Optional[str], min_complete: int,
                threshold: float) -> Optional[str]:
    """The one-line reason to stop, or None to go on. Pure."""
    found = verdict(trials, direction, uncertainty, min_complete)
    if found is None or found.chance >= threshold:
        return None
    return found.reason(threshold)
