"""The stopping rule (hydra.sweeper.stop_when_converged): its statistic checked against what it claims to be, and a
real sweep of the plugin's test app that stops when its trials are indistinguishable."""

from __future__ import annotations

import random

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from hydra_plugins.optuna_mlflow_sweeper._converged import chance_to_beat, should_stop, verdict
from tests.helpers.cli import run_in_process

DIST = {"x": FloatDistribution(0.0, 1.0)}


def _trials(values, state=TrialState.COMPLETE, spread=0.01):
    trials = [create_trial(state=state, value=v if state == TrialState.COMPLETE else None, params={"x": 0.5},
                           distributions=DIST, user_attrs={"sem": spread}) for v in values]
    for number, trial in enumerate(trials):
        trial.number = number
    return trials


def test_the_chance_is_the_normal_tail_a_large_sample_predicts():
    rng = random.Random(7)
    values = [rng.gauss(0.0, 1.0) for _ in range(20000)]
    # a new draw from N(0, 1) exceeds 1.0 with probability 1 - Phi(1) = 0.1587 (and 0.0228 for 2.0)
    assert chance_to_beat(values, best=0.5, margin=0.5) == pytest.approx(0.1587, abs=0.01)
    assert chance_to_beat(values, best=1.5, margin=0.5) == pytest.approx(0.0228, abs=0.005)


def test_a_small_sample_predicts_a_heavier_tail_than_the_normal():
    values = [-1.0, -0.5, 0.0, 0.5, 1.0]  # sd 0.79; t with 4 degrees of freedom
    wide = chance_to_beat(values, best=1.0, margin=0.5)
    normal_tail = 1 - __import__("statistics").NormalDist().cdf(1.5 / (0.7906 * (1 + 1 / 5) ** 0.5))
    assert wide > normal_tail + 0.01


def test_indistinguishable_trials_stop_spread_out_ones_go_on():
    close = _trials([0.830, 0.834, 0.828, 0.836, 0.831], spread=0.02)  # within 0.008, the best's sem 0.02
    assert verdict(close, "maximize", "sem", 5).chance < 0.005
    assert "by more than its own uncertainty (0.0200)" in should_stop(close, "maximize", "sem", 5, 0.05)
    spread_out = _trials([0.40, 0.55, 0.62, 0.70, 0.81], spread=0.02)  # a bad region: the next may well be better
    assert verdict(spread_out, "maximize", "sem", 5).chance > 0.1
    assert should_stop(spread_out, "maximize", "sem", 5, 0.05) is None


def test_only_complete_trials_count_and_minimising_mirrors_maximising():
    close = _trials([0.830, 0.834, 0.828, 0.836], spread=0.02) + _trials([None] * 5, TrialState.PRUNED)
    assert should_stop(close, "maximize", "sem", 5, 0.05) is None  # 4 complete < min_complete 5
    low = _trials([1.0, 1.2, 1.1, 0.9, 1.3], spread=0.05)
    high = _trials([-1.0, -1.2, -1.1, -0.9, -1.3], spread=0.05)
    assert verdict(low, "minimize", "sem", 5).chance == pytest.approx(verdict(high, "maximize", "sem", 5).chance)
    assert verdict(low, "minimize", "sem", 5).best_number == 3  # the lowest (0.9)


def test_without_an_uncertainty_value_the_margin_is_zero():
    trials = _trials([0.830, 0.834, 0.828, 0.836, 0.831])
    assert verdict(trials, "maximize", None, 5).margin == 0.0
    assert verdict(trials, "maximize", "no_such_value", 5).margin == 0.0
    assert verdict(trials, "maximize", "sem", 5).chance < verdict(trials, "maximize", None, 5).chance


@pytest.mark.slow
def test_a_sweep_whose_trials_cannot_be_told_apart_stops_says_why_and_still_runs_its_final_stage(stores):
    # The quadratic app near its minimum: every trial's loss is within 1e-4 of the others, its spread is 0.01.
    out = run_in_process("tests.apps.quadratic.app", "--multirun", f"tracking_uri={stores.tracking_uri}",
                     f"hydra.sweeper.storage={stores.storage}", f"hydra.sweep.dir={stores.sweep_dir}",
                     "hydra.sweeper.n_trials=12", "hydra.sweeper.pruner=none", "hydra.sweeper.pruner_options=null",
                     "hydra.sweeper.stop_when_converged=true",
                     "x=interval(0.99,1.01)", "y=interval(-2.01,-1.99)")
    assert out.returncode == 0, out.stderr
    (name,) = optuna.get_all_study_names(stores.storage)
    study = optuna.load_study(study_name=name, storage=stores.storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5  # min_complete, then the rule stops it
    (line,) = [s for s in out.stderr.splitlines() if s.startswith("stopping early:")]
    assert "5/12 trials finished" in line and "hydra.sweeper.stop_when_converged=false" in line
    runs = stores.runs(experiment="quadratic")
    (parent,) = [r for r in runs if r.data.tags.get("run_purpose") == "hyperparameter_sweep"]
    assert parent.data.tags["stopped_early"] in line and parent.info.status == "FINISHED"
    assert "**Stopped early** (hydra.sweeper.stop_when_converged): the chance that one more trial beats the best" \
        in parent.data.tags["mlflow.note.content"]  # the parent's description says so too
    results = yaml.safe_load((stores.sweep_dir / "optimization_results.yaml").read_text())
    assert results["status"] == "converged" and results["n_complete"] == 5
    (refit,) = [r for r in runs if r.data.tags.get("run_purpose") == "refit"]  # the answer is still packaged
    assert results["final_run_id"] == refit.info.run_id

    again = run_in_process("tests.apps.quadratic.app", "--multirun", f"tracking_uri={stores.tracking_uri}",
                       f"hydra.sweeper.storage={stores.storage}", f"hydra.sweep.dir={stores.sweep_dir}",
                       "hydra.sweeper.n_trials=12", "hydra.sweeper.pruner=none", "hydra.sweeper.pruner_options=null",
                       "x=interval(0.99,1.01)", "y=interval(-2.01,-1.99)")
    assert again.returncode == 0, again.stderr  # the rule off (the default): the same study runs to its 12
    study = optuna.load_study(study_name=name, storage=stores.storage)
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 12


BASELINE = __import__("types").SimpleNamespace(diff="d", low="lo", high="hi")


def _paired(diffs, half_width=0.004, pruned=(), start_value=0.84, last_step=None):
    """A configured trial (its last step is its value), complete trials with paired differences, pruned trials with
    their last step's value."""
    start = create_trial(state=TrialState.COMPLETE, value=start_value, params={"x": 0.5}, distributions=DIST,
                         intermediate_values={1: 0.70, 3: 0.78, 9: start_value if last_step is None else last_step},
                         user_attrs={"sweeper.start_point": True, "d": 0.0, "lo": 0.0, "hi": 0.0, "sem": 0.026})
    trials = [start]
    for d in diffs:
        trials.append(create_trial(state=TrialState.COMPLETE, value=start_value + d, params={"x": 0.5},
                                   distributions=DIST, user_attrs={"d": d, "lo": d - half_width, "hi": d + half_width,
                                                                   "sem": 0.026}))
    for step, value in pruned:
        trials.append(create_trial(state=TrialState.PRUNED, params={"x": 0.5}, distributions=DIST,
                                   intermediate_values={step: value}))
    for number, trial in enumerate(trials):
        trial.number = number
    return trials


def test_the_yardstick_is_the_paired_uncertainty_not_the_fold_spread():
    """Five configurations within the fold spread (sem 0.026) but not within the paired noise (±0.004): the unpaired
    rule stops at once, the paired one sees that one more trial may still gain."""
    trials = _paired([0.004, 0.010, -0.006, 0.015, 0.002, 0.020])
    unpaired = verdict(trials, "maximize", "sem", 5)
    paired = verdict(trials, "maximize", "sem", 5, BASELINE)
    assert paired.paired and paired.margin == pytest.approx(0.004 / 1.959964, rel=1e-4)
    assert unpaired.chance < 0.05 < paired.chance


def test_twins_count_once_and_equal_values_do_not_make_the_rule_certain():
    twins = _paired([0.002, 0.002, 0.002, 0.002, 0.003])  # four trials took one forest: three distinct results
    assert verdict(twins, "maximize", "sem", 5, BASELINE) is None
    assert verdict(_trials([0.83, 0.83, 0.83, 0.83, 0.84]), "maximize", "sem", 5) is None
    assert chance_to_beat([0.5] * 5, best=0.5, margin=0.01) > 0.1  # no spread seen is not certainty


def test_with_successive_halving_the_rungs_are_evidence():
    """One complete trial (the configured one) and pruned trials: their rung values against the configured trial's
    at the same rung make the sample; with money as the objective (steps are AP) they do not count."""
    pruned = [(1, 0.60), (1, 0.62), (3, 0.74), (1, 0.58), (3, 0.75), (1, 0.64)]
    trials = _paired([], pruned=pruned)
    found = verdict(trials, "maximize", "sem", 5, BASELINE)
    assert found is not None and found.n_complete == 7 and found.chance < 0.05
    money = _paired([], pruned=pruned, start_value=31_000.0, last_step=0.84)  # steps: AP, its value: money
    assert verdict(money, "maximize", "sem", 5, BASELINE) is None
