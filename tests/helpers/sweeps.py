"""The commands the tests run, in one place: a sweep, a one-trial sweep that packages its model (the final stage:
refit, test, register, gate), and several commands started at the same moment."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence

from tests.helpers import forks
from tests.helpers.cli import ROOT, Result, run_in_process, run_module
from tests.helpers.stores import QUIET, SMALL, Stores

# a one-trial study whose final stage packages the configured model: the gate's tests
PACKAGE = [*SMALL, "mlflow.log_plots=false", "hydra.sweeper.pruner=none", "hydra.sweeper.n_trials=1"]
GOOD = ["model.max_depth=8"]
WEAK = ["model.max_depth=1", "model.n_estimators=1", "model.class_weight=null"]  # about as good as a constant


def own_corner(prefix: str) -> tuple[str, list[str]]:
    """A name, and the overrides that give a test its own corner of a tracking server the suite shares (CI's, or the
    session's): its own experiment (searches see its runs only) and its own test rows (the ledger counts every look
    at a lineage's test split, server-wide). Use the name as the registered model's too."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    return name, [f"mlflow.experiment_name={name}", f"split.seed={uuid.uuid4().int % 2**32}"]


def run(*args: str, env: dict | None = None, fresh: bool = False) -> Result:
    """``python -m src.train args``, ``env`` set for it: in this process, or in a fresh one where the process itself
    matters (``fresh``: nothing it reads is cached in memory yet)."""
    return run_module("src.train", *args, env=env) if fresh else run_in_process("src.train", *args, env=env)


def sweep(stores: Stores, *overrides: str, base: Sequence[str] = QUIET, env: dict | None = None) -> Result:
    """``python -m src.train --multirun`` into the test's stores (no registry, plots or pruner by default)."""
    return run("--multirun", *base, *stores.overrides(), *[o for o in overrides if o], env=env)


def package_args(stores: Stores, sweep_dir: str, *overrides: str, name: str, tracking: str | None = None) -> list[str]:
    real = any(o.startswith("dataset=creditcard") for o in overrides)  # a CSV file: no synthetic settings
    base = [o for o in PACKAGE if not (real and o.startswith("dataset"))]
    return ["--multirun", *base, *stores.overrides(), f"hydra.sweep.dir={stores.root / sweep_dir}",
            f"registry.model_name={name}", *([f"mlflow.tracking_uri={tracking}"] if tracking else []), *overrides]


def package(stores: Stores, sweep_dir: str, *overrides: str, name: str, tracking: str | None = None,
            env: dict | None = None, fresh: bool = False) -> Result:
    """A one-trial sweep and its final stage into the test's stores (its own study: the sweep folder names it)."""
    return run(*package_args(stores, sweep_dir, f"hydra.sweeper.study_name={sweep_dir}", *overrides, name=name,
                             tracking=tracking), env=env, fresh=fresh)


def together(commands: list[list[str]], env: dict | None = None) -> list[Result]:
    """``python -m <command>`` for every command, each in a process of its own, all started at the same moment;
    waits for all of them. The processes are forked from this test process's forkserver (tests/helpers/forks.py):
    as fresh as ``python -m`` in all they read and cache, but with the ~5 s of imports done once per test process
    rather than once per command (what the concurrency tests race is the commands' work, not their imports)."""
    return forks.together(commands, cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
