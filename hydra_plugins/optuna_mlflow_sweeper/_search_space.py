"""Hydra's override grammar to Optuna distributions: pure functions.

``choice(...)`` -> categorical; ``range(a,b,step=s)`` -> integer (float if any bound is a float) with Hydra's
*exclusive* stop; ``interval(a,b)`` -> float; ``int(interval(a,b))`` -> integer; ``tag(log, ...)`` -> log scale.
A plain value pins the parameter: it leaves the search space and every trial uses it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, Override, RangeSweep
from hydra.errors import HydraException
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from ._context import COUNTED_FAILURES, FAIL_REASON_ATTR, FailReason


class SearchSpaceError(ValueError):
    pass


@dataclass
class SearchSpace:
    distributions: dict[str, BaseDistribution] = field(default_factory=dict)
    expressions: dict[str, str] = field(default_factory=dict)  # key -> the sweep expression as written
    # key -> the value every trial uses, and the override that sets it (passed to every job).
    pinned: dict[str, Any] = field(default_factory=dict)
    pinned_overrides: list[str] = field(default_factory=list)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def range_values(start: float, stop: float, step: float) -> tuple[float, float, int]:
    """(first, last, count) of Hydra's range(start, stop, step), expanded by Hydra itself: ``stop`` excluded, and
    float ranges stepped as Hydra steps them (range(0,0.9,step=0.3) has four values there)."""
    if step == 0:
        raise SearchSpaceError("range step must not be 0")
    values = list(RangeSweep(start=start, stop=stop, step=step).range())
    if not values:
        return start, start, 0
    return values[0], round(values[-1], 12), len(values)


def to_distribution(key: str, override: Override) -> BaseDistribution:
    """The Optuna distribution for one sweep override; Optuna's own checks (a log scale from 0, ...) in one line."""
    try:
        return _to_distribution(key, override)
    except SearchSpaceError:
        raise
    except ValueError as exc:
        raise SearchSpaceError(f"{key}={override.input_line.split('=', 1)[-1]}: {' '.join(str(exc).split())}") from None


def _to_distribution(key: str, override: Override) -> BaseDistribution:
    value = override.value()
    tags = getattr(value, "tags", set()) or set()
    unknown_tags = set(tags) - {"log"}
    if unknown_tags:
        raise SearchSpaceError(f"{key}: unknown tag(s) {sorted(unknown_tags)}; only tag(log, ...) is understood")
    log = "log" in tags
    if isinstance(value, ChoiceSweep):
        choices = list(value.list)
        if log:
            raise SearchSpaceError(f"{key}: tag(log, ...) applies to range or interval, not choice")
        if not choices:
            raise SearchSpaceError(f"{key}: choice() needs at least one value")
        if any(isinstance(c, (list, dict)) for c in choices):
            raise SearchSpaceError(f"{key}: choice values must be plain values, not lists or dicts")
        if len(set(map(repr, choices))) != len(choices):
            raise SearchSpaceError(f"{key}: choice({', '.join(map(str, choices))}) repeats a value")
        return CategoricalDistribution(choices)
    if isinstance(value, RangeSweep):
        first, last, count = range_values(value.start, value.stop, value.step)
        if count == 0:
            raise SearchSpaceError(
                f"{key}: range({value.start}, {value.stop}, step={value.step}) is empty (the stop is excluded)")
        low, high = min(first, last), max(first, last)
        step = abs(value.step)
        if all(_is_int(v) for v in (value.start, value.stop, value.step)):
            if log and step != 1:
                raise SearchSpaceError(f"{key}: tag(log, range(...)) needs step=1 (Optuna cannot step a log scale)")
            return IntDistribution(int(low), int(high), log=log, step=int(step))
        if log:
            raise SearchSpaceError(
                f"{key}: a float range with tag(log) cannot have a step; use tag(log, interval(a,b))")
        return FloatDistribution(float(low), float(high), step=float(step))
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        if not start < end:
            raise SearchSpaceError(f"{key}: interval({start}, {end}) needs its start below its end")
        if log and start <= 0:
            raise SearchSpaceError(f"{key}: tag(log, interval({start}, {end})) needs a start above 0")
        if _is_int(start) and _is_int(end):
            return IntDistribution(start, end, log=log)
        return FloatDistribution(float(start), float(end), log=log)
    if isinstance(value, Glob):
        raise SearchSpaceError(f"{key}: glob(...) is not supported by this sweeper; list the values with choice(...)")
    raise SearchSpaceError(f"{key}: {override.input_line!r} is not a sweep (use choice, range or interval)")


def key_of(override: Override) -> str:
    """The config key an override sets, without its +/++/~ prefix (``+model.max_depth=7`` sets model.max_depth)."""
    key = override.key_or_group
    return f"{key}@{override.package}" if override.package else key


def parse(lines: Iterable[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(list(lines))
    except HydraException as exc:
        raise SearchSpaceError(" ".join(str(exc).split())) from None


def build(params: Mapping[str, str], command_line: Iterable[str]) -> SearchSpace:
    """Merge the search-space config and the command line.

    A sweep expression on the command line replaces the config's entry for that key; a plain value pins the key.
    """
    space = SearchSpace()
    by_key: dict[str, Override] = {}
    for override in parse(f"{key}={expr}" for key, expr in params.items()):
        by_key[key_of(override)] = override
    for override in parse(command_line):
        key = key_of(override)
        if override.is_sweep_override():
            by_key[key] = override
        else:
            by_key.pop(key, None)
            space.pinned[key] = override.value() if not override.is_delete() else None
            space.pinned_overrides.append(override.input_line)
    for key, override in by_key.items():
        if override.is_sweep_override():
            space.distributions[key] = to_distribution(key, override)
            space.expressions[key] = override.input_line.split("=", 1)[1]
        else:  # a plain value in the search-space config: every trial uses it
            space.pinned[key] = override.value()
            space.pinned_overrides.append(override.input_line)
    return space


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-./]*$")
_RESERVED = {"true", "false", "null", "nan", "inf"}


def format_value(value: Any) -> str:
    """A sampled value as Hydra override syntax that parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if _is_int(value):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    escaped = text.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def to_overrides(params: Mapping[str, Any]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


_UNSET_WORDS = {"none", "null"}


def start_point(distributions: Mapping[str, BaseDistribution], configured: Mapping[str, Any]) -> dict[str, Any]:
    """The configured values that lie in the search space, as the params of a first trial.

    An unset value (null) matches a ``none`` choice: the config writes unlimited depth as null, the grammar as none.
    Values outside the space are left out (the sampler proposes those).
    """
    point: dict[str, Any] = {}
    for key, dist in distributions.items():
        if key not in configured:
            continue
        value = configured[key]
        if isinstance(dist, CategoricalDistribution):
            for choice in dist.choices:
                same_unset = value is None and isinstance(choice, str) and choice.lower() in _UNSET_WORDS
                if same_unset or (type(choice) is type(value) and choice == value):
                    point[key] = choice
                    break
        elif _is_int(value) or (isinstance(value, float) and isinstance(dist, FloatDistribution)):
            if dist._contains(dist.to_internal_repr(value)):
                point[key] = value
    return point


def start_point_lost(trials: Iterable[FrozenTrial], point: Mapping[str, Any]) -> bool:
    """True when the study once queued ``point`` as its first trial and every copy of it was cut short (its
    worker killed or interrupted): then it goes back in the queue, or the configured values would never be
    scored. A copy that failed on its own (an error, a NaN) is not retried."""
    copies = [t for t in trials if t.system_attrs.get("fixed_params") == dict(point)]
    return bool(copies) and all(
        t.state == TrialState.FAIL and t.user_attrs.get(FAIL_REASON_ATTR, FailReason.STALE) not in COUNTED_FAILURES
        for t in copies)
