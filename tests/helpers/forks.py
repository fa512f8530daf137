"""Commands started together as processes of their own, forked from one forkserver whose imports are done.

Invariants: each command runs in its own process (its own pid, memory, database connections and signals), as ``python
-m`` runs it (runpy, ``__main__``, its argv, cwd and environment, its exit handlers; its stdout and stderr are its own
files); nothing of the test process is inherited (the forkserver is a fresh interpreter that has only imported the
modules below; importing them must start no thread and open nothing, as is so on 2026-12-03: after the imports the
main thread is the only one); all are started before any is waited for. What is saved is the interpreter start and the
imports, once per test process instead of once per command.
"""

from __future__ import annotations

import atexit
import functools
import multiprocessing
import os
import runpy
import sys
import tempfile
import warnings
from pathlib import Path

from tests.helpers.cli import Result

# What every command imports (a sweep, a single run, a packaging): loaded once, in the forkserver.
PRELOAD = ["src.train", "src.registry", "hydra_plugins.optuna_mlflow_sweeper.optuna_mlflow_sweeper", "skops.io"]


@functools.cache
def _context() -> multiprocessing.context.BaseContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _main(module: str, args: list[str], cwd: str, env: dict[str, str], out: str, err: str) -> None:
    """The child: its stdout and stderr on files (file descriptors 1 and 2, as a subprocess's), then the module."""
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    os.environ.clear()
    os.environ.update(env)
    if env.get("PYTHONWARNINGS") == "ignore":  # read at interpreter start: applied as python -W would
        warnings.simplefilter("ignore")
    os.chdir(cwd)
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:  # multiprocessing ends a child with os._exit: the interpreter's exit handlers, as python -m runs them
        atexit._run_exitfuncs()


def together(commands: list[list[str]], cwd: Path, env: dict[str, str], timeout: float = 900) -> list[Result]:
    """Each ``[module, *args]`` in a process of its own, all started at once; their exit codes and output."""
    context = _context()
    env = {k: v for k, v in env.items() if k != "HYDRA_FULL_ERROR"}
    with tempfile.TemporaryDirectory() as tmp:
        files = [(str(Path(tmp) / f"{i}.out"), str(Path(tmp) / f"{i}.err")) for i in range(len(commands))]
        procs = [context.Process(target=_main, args=(cmd[0], cmd[1:], str(cwd), env, out, err))
                 for cmd, (out, err) in zip(commands, files, strict=True)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout)
            if proc.exitcode is None:
                proc.kill()
                proc.join()
        return [Result(proc.exitcode, Path(out).read_text(), Path(err).read_text())
                for proc, (out, err) in zip(procs, files, strict=True)]
