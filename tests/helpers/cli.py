"""Running the project's commands as a user would, in a fresh process, and reading what they print."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def run_module(module: str, *args: str, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None) -> Result:
    """``python -m module args`` in a fresh process."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(result: Result, *fragments: str) -> None:
    """Exit code 2, one line on stderr that starts with 'error: ' and holds every fragment, no traceback."""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, f"expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def assert_ends_in_one_line_error(result: Result, fragment: str) -> None:
    """A sweep's stderr holds progress lines before its error: the error itself is one line, last."""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[-1].startswith("error: ") and fragment in lines[-1], lines[-1]


def run_in_process(module: str, *args: str, env: dict | None = None) -> Result:
    """``python -m module args`` in this process (runpy, as ``python -m`` runs it): the same entry point, the same
    one-line errors and exit codes, without a fresh interpreter's ~3 s of imports. For commands whose test is
    about what they print and write, not about the process itself (signals, kills, concurrency use run_module).
    ``env``: variables set for the run only (ones the code reads when it runs, not at import), then restored."""
    import contextlib
    import io
    import runpy

    out, err = io.StringIO(), io.StringIO()
    argv, cwd, environ = sys.argv, os.getcwd(), dict(os.environ)
    sys.argv = [module, *args]
    os.environ.update(env or {})
    code = 0
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(environ)
    return Result(code, out.getvalue(), err.getvalue())
