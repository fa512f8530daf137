"""What the commands print: never a secret, and no library's chatter by default.

Every write to stdout and stderr passes through ``redact`` (Hydra's own "Error executing job with overrides" line
and tracebacks included, which print the command line's URIs). MLflow's and Alembic's log lines (INFO about
creating tables, and their own report of an error this command then reports in one line) are off unless asked
for: ``hydra.verbose=[mlflow,alembic]`` (Hydra's own switch) or ``-v`` for the registry command."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from hydra_plugins.optuna_mlflow_sweeper.job import redact


class RedactingStream:
    """A text stream that redacts URL secrets line by line before writing them to the stream it wraps."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            self._stream.write(redact(line) + "\n")
        if len(self._pending) > 4096 or "\r" in self._pending:  # progress bars and long partial lines
            self._stream.write(redact(self._pending))
            self._pending = ""
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(redact(self._pending))
            self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, ...
        return getattr(self._stream, name)


@contextlib.contextmanager
def redacted_output() -> Iterator[None]:
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = RedactingStream(out), RedactingStream(err)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = out, err


LIBRARY_LOGGERS = ("mlflow", "alembic")


def quiet_libraries() -> None:
    """Hide the libraries' own log lines (and MLflow's download progress bars): every error that matters reaches
    this project's one-line report."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
