"""Hydra's override grammar to Optuna distributions."""

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from hydra_plugins.optuna_mlflow_sweeper._search_space import (
    SearchSpaceError,
    build,
    format_value,
    range_values,
    start_point,
    start_point_lost,
    to_distribution,
)


def dist(expr: str):
    return to_distribution("k", OverridesParser.create().parse_override(f"k={expr}"))


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("choice(4,8,none)", CategoricalDistribution([4, 8, "none"])),
        ("choice(balanced,balanced_subsample)", CategoricalDistribution(["balanced", "balanced_subsample"])),
        ("1,2,3", CategoricalDistribution([1, 2, 3])),
        ("range(10,30,step=10)", IntDistribution(10, 20, step=10)),  # Hydra's stop is exclusive
        ("range(50,100,step=25)", IntDistribution(50, 75, step=25)),
        ("range(2,21)", IntDistribution(2, 20)),
        ("range(5)", IntDistribution(0, 4)),
        ("range(30,4,step=-5)", IntDistribution(5, 30, step=5)),
        ("shuffle(range(1,4))", IntDistribution(1, 3)),
        ("range(0.1,0.5,step=0.1)", FloatDistribution(0.1, 0.4, step=0.1)),
        ("range(1,4.0)", FloatDistribution(1.0, 3.0, step=1.0)),
        ("interval(0.1,0.9)", FloatDistribution(0.1, 0.9)),
        ("interval(1,10)", FloatDistribution(1.0, 10.0)),
        ("int(interval(1,10))", IntDistribution(1, 10)),
        ("tag(log, interval(0.001,1))", FloatDistribution(0.001, 1.0, log=True)),
        ("tag(log, int(interval(10,1000)))", IntDistribution(10, 1000, log=True)),
        ("tag(log, range(1,100))", IntDistribution(1, 99, log=True)),
    ],
)
def test_grammar_table(expr, expected):
    assert dist(expr) == expected


@pytest.mark.parametrize(
    "expr, message",
    [
        ("range(10,10)", "is empty"),
        ("range(30,4)", "is empty"),
        ("interval(5,1)", "start below its end"),
        ("tag(log, choice(1,2))", "applies to range or interval"),
        ("tag(log, range(1,100,step=2))", "needs step=1"),
        ("tag(log, interval(0,1))", "start above 0"),
        ("tag(fancy, interval(0,1))", "unknown tag"),
        ("glob(*)", "glob(...) is not supported"),
        ("choice(1,1)", "repeats a value"),
        ("choice([1,2],[3])", "plain values"),
    ],
)
def test_bad_expressions(expr, message):
    with pytest.raises(SearchSpaceError, match=None) as info:
        dist(expr)
    assert message in str(info.value)


@pytest.mark.parametrize("start, stop, step, expected", [
    (10, 30, 10, (10, 20, 2)), (0, 1, 1, (0, 0, 1)), (0.0, 1.0, 0.25, (0.0, 0.75, 4)), (3, 3, 1, (3, 3, 0)),
])
def test_range_values(start, stop, step, expected):
    assert range_values(start, stop, step) == expected


SPACE = {
    "model.n_estimators": "range(100,501,step=50)",
    "model.max_depth": "choice(4,8,none)",
    "model.min_samples_leaf": "range(1,11)",
}


def test_plain_command_line_value_pins_the_key():
    space = build(SPACE, ["model.max_depth=12", "dataset=synthetic"])
    assert "model.max_depth" not in space.distributions
    assert space.pinned == {"model.max_depth": 12, "dataset": "synthetic"}
    assert space.pinned_overrides == ["model.max_depth=12", "dataset=synthetic"]
    assert set(space.distributions) == {"model.n_estimators", "model.min_samples_leaf"}


def test_command_line_sweep_replaces_the_config_entry():
    space = build(SPACE, ["model.min_samples_leaf=range(2,5)", "model.min_samples_split=choice(2,10)"])
    assert space.distributions["model.min_samples_leaf"] == IntDistribution(2, 4)
    assert space.distributions["model.min_samples_split"] == CategoricalDistribution([2, 10])
    assert space.expressions["model.min_samples_leaf"] == "range(2,5)"
    assert space.pinned == {}


def test_plain_value_in_search_space_config_is_pinned():
    space = build({**SPACE, "model.class_weight": "balanced"}, [])
    assert space.pinned == {"model.class_weight": "balanced"}


@pytest.mark.parametrize("value", [12, 0.001, 1e-7, "none", "balanced", None, True, "needs quoting, yes", "it's"])
def test_format_value_round_trips_through_hydra(value):
    parsed = OverridesParser.create().parse_override(f"k={format_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize("expr, configured, expected", [
    ("choice(8,16,none)", None, "none"),          # the config's null is the grammar's none
    ("choice(8,16,none)", 16, 16),
    ("choice(8,16)", None, None),                 # not in the space: left to the sampler
    ("choice(1,2)", True, None),                  # True is not the choice 1
    ("range(50,501,step=50)", 100, 100),
    ("range(50,501,step=50)", 120, None),         # off the step grid
    ("range(2,11)", 11, None),                    # range's stop is excluded
    ("interval(0.1,0.9)", 0.5, 0.5),
    ("int(interval(1,10))", 10, 10),
])
def test_start_point_keeps_configured_values_that_lie_in_the_space(expr, configured, expected):
    point = start_point({"k": dist(expr)}, {"k": configured})
    assert point == ({} if expected is None else {"k": expected})


POINT = {"model.max_depth": "none", "model.min_samples_leaf": 1}


def _trial(state, params=POINT, reason=None):
    return create_trial(state=state, value=0.8 if state == TrialState.COMPLETE else None,
                        system_attrs={"fixed_params": dict(params)},
                        user_attrs={"fail_reason": reason} if reason else {})


@pytest.mark.parametrize("trials, lost", [
    ([], False),                                                            # never queued (start_from_config was off)
    ([_trial(TrialState.WAITING)], False),                                  # still in the queue
    ([_trial(TrialState.RUNNING)], False),                                  # a live worker runs it
    ([_trial(TrialState.COMPLETE)], False),
    ([_trial(TrialState.FAIL)], True),                                      # failed by Optuna's heartbeat check
    ([_trial(TrialState.FAIL, reason="stale: its worker died")], True),     # killed
    ([_trial(TrialState.FAIL, reason="interrupted")], True),                # Ctrl-C
    ([_trial(TrialState.FAIL, reason="stale: its worker died"), _trial(TrialState.WAITING)], False),  # queued again
    ([_trial(TrialState.FAIL, reason="error")], False),                     # fails on its own: not retried
    ([_trial(TrialState.FAIL, reason="nan")], False),
    ([_trial(TrialState.FAIL, params={"model.max_depth": 8, "model.min_samples_leaf": 1})], False),  # another point
])
def test_start_point_goes_back_in_the_queue_only_when_its_run_was_cut_short(trials, lost):
    assert start_point_lost(trials, POINT) is lost


@pytest.mark.parametrize("expr", ["range(0,0.9,step=0.3)", "range(0,1,step=0.1)", "range(0.1,0.5,step=0.1)",
                                  "range(1,4.0)", "range(0.5,2.6,step=0.7)", "range(10,30,step=10)"])
def test_a_range_has_the_values_of_hydras_own_expansion(expr):
    """The distribution holds exactly as many values as Hydra's expansion of the same range (range(0,0.9,step=0.3)
    is 0, 0.3, 0.6 and 0.8999999999999999 there)."""
    override = OverridesParser.create().parse_override(f"k={expr}")
    hydra_values = list(override.sweep_iterator())
    d = dist(expr)
    if isinstance(d, IntDistribution):
        values = list(range(d.low, d.high + 1, d.step))
    else:
        values = [d.low + i * d.step for i in range(round((d.high - d.low) / d.step) + 1)]
    assert values == pytest.approx(hydra_values)


@pytest.mark.parametrize("line", ["+model.max_depth=7", "++model.max_depth=7", "model.max_depth=7"])
def test_an_added_or_forced_value_pins_the_key_too(line):
    space = build(SPACE, [line])
    assert "model.max_depth" not in space.distributions
    assert space.pinned == {"model.max_depth": 7} and space.pinned_overrides == [line]
