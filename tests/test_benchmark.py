"""The speed benchmark's small mode, so that it cannot rot (its timings are recorded, never asserted)."""

import json
import subprocess
import sys

import pytest

from tests.benchmark.peer import at_half
from tests.benchmark.speed import best_within
from tests.helpers.cli import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.benchmark]


def test_small_benchmark_runs_and_reports_every_measurement(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.speed", "--small", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for row in ("Sweep with budget B:", "Sweep with budget B/2", "Overhead outside fitting", "Pruning: wall time",
                "Peak RSS", "Fixed cost per trial"):
        assert row in proc.stdout
    r = json.loads(out.read_text())
    assert len(r["seed_configs"]) == 5 and r["budget_seconds"] > 0
    assert [c["trees"] for c in r["tree_curve"]] == [10, 20, 30, 40] and "as its forest grows" in proc.stdout
    assert r["sweep_B"]["n_trials"] >= 1 and 0 < r["sweep_B"]["overhead_fraction"] < 1
    assert r["pruned"]["n_trials"] == r["unpruned"]["n_trials"]
    assert r["tiny_ours_median_outside_fit"] > 0 and r["tiny_bare_median_outside_fit"] > 0


def test_unknown_phase_is_refused_before_any_work():
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.speed", "--phases", "search,warp"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "choose among trees, search, pruning, tiny" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_small_gate_benchmark_runs_both_phases(tmp_path):
    out = tmp_path / "gate.json"
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.gate", "--small", "--phases", "holdout,aa",
                           "--samples", "4", "--json", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["holdout"]) == {"random", "time"} and r["aa"]["samples"] == 4
    assert set(r["aa"]["rates"]) == {"aa", "aa_reverse", "gap_0.02", "gap_0.05"}
    for rates in [*r["aa"]["rates"].values(), r["aa"]["false_promotion"]]:
        for criterion in ("pr_auc", "net_gain"):
            for level in ("0.95", "0.975", "0.99"):
                low, high = rates[criterion][level]["ci95"]
                assert 0 <= low <= rates[criterion][level]["rate"] <= high <= 1
    assert r["aa"]["false_promotion"]["pr_auc"]["0.95"]["of"] == 8 and len(r["aa"]["records"]["aa"]) == 4
    truth = r["aa"]["truth"]
    assert truth["champion"]["ap"] - truth["worse_by_0.05"]["ap"] == pytest.approx(0.05, abs=0.002)
    assert "| aa_reverse |" in proc.stdout and "False promotions" in proc.stdout


def test_small_cost_benchmark_compares_every_peer_on_the_anchors_protocol(tmp_path):
    out = tmp_path / "cost.json"
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.cost", "--small", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["results"]) == {"flag_nothing", "logistic_regression_0.5", "logistic_regression_tuned",
                                 "random_forest_tuned", "ours"}
    for name, row in r["results"].items():
        low, high = row["ci"]
        assert low <= row["net_gain"] <= high
        if name != "ours":
            assert row["verdict"] in ("tie", "ours ahead", "ours behind")
    assert 0 <= r["results"]["ours"]["threshold"] <= 1 and r["test_rows"] == 10_000


def test_the_plain_loop_comparison_runs(tmp_path):
    out = tmp_path / "loop.json"
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.loop", "--trials", "3", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert len(r["plain"]["per_trial"]) == 3 and len(r["ours"]["per_trial"]) == 2 and r["ratio"] > 0
    assert "| ours (compose_once, the default) |" in proc.stdout


def test_the_peer_comparison_runs_every_phase(tmp_path):
    out = tmp_path / "peer.json"
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.peer", "--small", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["peer"]["candidates_per_iteration"][0] == 4 and r["peer"]["best"] > 0
    assert r["serial"]["n_trials"] == 4 and r["parallel"]["n_trials"] == 4 and r["parallel"]["workers"] == 2
    assert 1 <= r["converged"]["n_trials"] <= 4
    # fitting work: the configured trial (10 trees) grew looks at 1/9 and 1/3 of fold 1's rows, then three folds
    configured = r["serial"]["trials"][0]
    assert configured["state"] == "COMPLETE" and configured["tree_folds"] == pytest.approx(10 * (1 / 9 + 1 / 3 + 3))
    assert r["serial"]["tree_folds"] == pytest.approx(sum(t["tree_folds"] for t in r["serial"]["trials"]))
    assert r["peer"]["tree_folds"] > 0 and r["wide_peer"]["tree_folds"] > 0
    bests = {"peer", "serial", "parallel", "converged", "wide_peer", "wide", "looks"}
    halves = {f"{k} half {b}" for k in ("serial", "wide") for b in ("wall", "work")}
    assert bests <= set(r["rescored"]) <= bests | halves
    # had our studies stopped at half the peer's wall or work: the best of the trials ended by then, never better
    for key, peer in (("serial", "peer"), ("wide", "wide_peer")):
        x = r[key]
        assert best_within(x["trials"], x["launched"])["value"] == x["best"]
        for budget, t in at_half(r)[key].items():
            assert t is None or (t["value"] <= x["best"] and f"{key} {budget}" in r["rescored"])
        wall = at_half(r)[key]["half wall"]
        assert wall is None or wall["ended_after"] <= r[peer]["wall"] / 2
    assert set(r["looks"]["spearman_with_final"]) >= {"1/9 of fold 1's rows", "1/3 of fold 1's rows"}
    for row in ("HalvingRandomSearchCV (peer)", "ours, one trial at a time", "ours, two workers x one core",
                "ours, stop_when_converged=true", "wide space: ours (start_from_config=false)", "Rank correlation",
                "fitting work (tree-folds)"):
        assert row in proc.stdout


def test_a_studys_best_within_a_budget_is_the_best_of_the_trials_ended_by_then():
    def trial(number, ended, work, value):
        return {"number": number, "ended": ended, "tree_folds": work, "value": value, "params": {}}

    trials = [trial(0, 110, 30, 0.70), trial(1, 120, 5, None), trial(3, 200, 50, 0.80), trial(2, 150, 40, 0.75)]
    assert best_within(trials, 100)["number"] == 3  # no budget: the study's best (trial 1 was pruned)
    assert best_within(trials, 100, seconds=50)["number"] == 2  # trial 3 ended 100 s after the start
    assert best_within(trials, 100, seconds=5) is None
    assert best_within(trials, 100, tree_folds=74)["number"] == 0  # trial 2 brings the work to 75
    by = best_within(trials, 100, tree_folds=75)
    assert by["number"] == 2 and by["tree_folds_by_then"] == 75 and by["ended_after"] == 50


def test_the_looks_comparison_scores_every_look_as_is_and_scaled(tmp_path):
    out = tmp_path / "looks.json"
    proc = subprocess.run([sys.executable, "-m", "tests.benchmark.looks", "--small", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert set(r["summary"]) == {"0.1111:as_is", "0.1111:scaled", "0.3333:as_is", "0.3333:scaled"}
    assert len(r["rows"]) == r["n"] and all(0 < row["fold 1"] <= 1 for row in r["rows"])
    assert "| 0.1111 of the rows, scaled |" in proc.stdout
