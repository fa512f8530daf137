"""The sweeper's pure helpers, in-process: which trial is best and which one the final stage runs, what of a job's
return value is kept, bare names, the surplus rule, Hydra's override_dirname, how values are shown."""

from __future__ import annotations

import types

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hydra_plugins.optuna_mlflow_sweeper._launch import is_leaf, override_dirname
from hydra_plugins.optuna_mlflow_sweeper._loop import surplus
from hydra_plugins.optuna_mlflow_sweeper._tell import kept, links_of, objective_of
from hydra_plugins.optuna_mlflow_sweeper._trials import (
    bare_names,
    beats_start,
    best_of,
    chosen,
    counts,
    verdict,
    with_spread,
)

DIST = {"x": FloatDistribution(0.0, 1.0)}
BASELINE = types.SimpleNamespace(diff="d", low="lo", high="hi")


def trial(number, value=None, state=TrialState.COMPLETE, **attrs):
    t = create_trial(state=state, value=value if state == TrialState.COMPLETE else None, params={"x": 0.5},
                     distributions=DIST, user_attrs=attrs)
    t.number = number
    return t


def test_the_best_is_the_earliest_of_equal_values_in_either_direction():
    trials = [trial(0, 0.5), trial(1, 0.7), trial(2, 0.7), trial(3, state=TrialState.PRUNED), trial(4, 0.1)]
    assert best_of(trials, "maximize").number == 1 and best_of(trials, "minimize").number == 4
    assert best_of([trial(0, state=TrialState.PRUNED)], "maximize") is None


def test_the_final_stage_runs_the_best_that_beat_the_configured_values_with_confidence():
    start = trial(0, 0.80, **{"sweeper.start_point": True, "d": 0.0, "lo": 0.0, "hi": 0.0})
    noise = trial(1, 0.83, d=0.03, lo=-0.01, hi=0.07)  # the best point estimate: within the noise
    better = trial(2, 0.82, d=0.02, lo=0.005, hi=0.035)  # a little lower, but better with confidence
    assert chosen([start, noise, better], "maximize", BASELINE).number == 2
    assert chosen([start, noise], "maximize", BASELINE).number == 0  # nothing beat it: the configured values
    assert "no trial beat the configured model (trial 0)" in verdict([start, noise], "maximize", BASELINE, "ap")
    assert verdict([start, noise, better], "maximize", BASELINE, "ap") == (
        "trial 2: +0.0200 [+0.0050, +0.0350] ap over the configured model (trial 0)")
    assert not beats_start(start, BASELINE, "maximize")  # never itself
    lower = trial(3, 0.7, d=-0.1, lo=-0.15, hi=-0.05)
    assert beats_start(lower, BASELINE, "minimize") and chosen([start, lower], "minimize", BASELINE).number == 3
    nothing = types.SimpleNamespace(diff=None, low=None, high=None)
    assert chosen([start, noise, better], "maximize", nothing).number == 1  # no baseline: the plain best


def test_what_of_a_jobs_return_value_is_kept():
    returned = {"loss": 0.5, "n": 3, "ok": True, "note": "short", "long": "x" * 2000, "curve": [1, 2], "nan": None,
                "links": {"a version": "#/models/m/versions/1", "bad": 3}}
    assert kept(returned) == {"loss": 0.5, "n": 3, "ok": True, "note": "short"}
    assert objective_of(returned, "loss") == (0.5, {"n": 3, "ok": True, "note": "short"})
    assert objective_of(0.25, "loss") == (0.25, {})
    value, _ = objective_of({"other": 1.0}, "loss")
    assert value != value  # NaN: the trial fails with reason nan
    assert links_of(returned) == {"a version": "#/models/m/versions/1"} and links_of(0.5) == {}


def test_bare_names_keep_the_full_key_where_two_would_collide():
    assert bare_names(["model.max_depth", "model.n_estimators"]) == {"model.max_depth": "max_depth",
                                                                      "model.n_estimators": "n_estimators"}
    assert bare_names(["a.seed", "b.seed", "c.x"]) == {"a.seed": "a.seed", "b.seed": "b.seed", "c.x": "x"}


@pytest.mark.parametrize("number, seen_states, asked, n_trials, later, expected", [
    (3, [TrialState.COMPLETE] * 3, 0, 5, None, False),  # ours follows what was seen, room left: no re-read
    (5, [TrialState.COMPLETE] * 5, 0, 5, [TrialState.COMPLETE] * 5, True),  # the study is full
    (6, [TrialState.COMPLETE] * 4, 0, 5, [TrialState.COMPLETE] * 6, True),  # another worker filled it meanwhile
    (6, [TrialState.COMPLETE] * 4, 0, 5, [TrialState.COMPLETE] * 4 + [TrialState.FAIL] * 2, False),  # failed: room
    (4, [TrialState.COMPLETE] * 3 + [TrialState.FAIL], 0, 5, None, False),  # a failure does not fill a place
])
def test_the_surplus_rule(number, seen_states, asked, n_trials, later, expected):
    seen = [trial(i, 0.5 if s == TrialState.COMPLETE else None, s) for i, s in enumerate(seen_states)]

    def earlier():
        assert later is not None, "the rule read the study again where the trials seen decide"
        return [trial(i, 0.5 if s == TrialState.COMPLETE else None, s) for i, s in enumerate(later)]

    assert surplus(number, seen, asked, n_trials, earlier) is expected


def test_override_dirname_is_hydras_rule():
    rule = types.SimpleNamespace(exclude_keys=["seed"], item_sep=",", kv_sep="=")
    parsed = OverridesParser.create().parse_overrides(["b=2", "a=1", "seed=3"])
    assert override_dirname(parsed, rule) == "a=1,b=2"
    assert override_dirname(parsed, types.SimpleNamespace(exclude_keys=[], item_sep="_", kv_sep=":")) == \
        "a:1_b:2_seed:3"


def test_a_leaf_is_found_without_resolving_it():
    """A job's folder interpolates hydra.job.num, which a template does not have yet: it is a leaf all the same."""
    config = OmegaConf.create({"hydra": {"job": {"num": "???"}, "sweep": {"subdir": "${hydra.job.num}"}},
                               "model": {"depth": None, "trees": 5, "inner": {"x": 1}}, "looks": [1, 2]})
    OmegaConf.set_struct(config, True)
    for key in ("hydra.sweep.subdir", "hydra.job.num", "model.depth", "model.trees", "model.inner.x"):
        assert is_leaf(config, key), key
    for key in ("model.inner", "model", "model.absent", "absent.x", "looks.0", "model.trees.x", "hydra/launcher"):
        assert not is_leaf(config, key), key


def test_values_are_shown_with_their_spread_and_surplus_trials_are_not_counted():
    assert with_spread(0.83701, 0.04551) == "0.8370 ± 0.0455" and with_spread(0.8, float("nan")) == "0.8000"
    assert with_spread(31_250.4, 812.7) == "31,250.4 ± 812.7" and with_spread(None, 1.0) == "-"
    trials = [trial(0, 0.5), trial(1, state=TrialState.PRUNED), trial(2, state=TrialState.FAIL, fail_reason="error"),
              trial(3, state=TrialState.FAIL, fail_reason="surplus")]
    assert counts(trials) == {"n_complete": 1, "n_pruned": 1, "n_failed": 1}
