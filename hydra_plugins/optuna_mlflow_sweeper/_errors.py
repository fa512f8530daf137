"""The sweeper's expected errors, and how any error reads in one line."""

from __future__ import annotations

from hydra.errors import HydraException


class SweeperError(HydraException):
    """An expected problem with the sweep's settings or stores: reported as one line."""


class TrackingDown(SweeperError):
    """The MLflow tracking server stopped answering: the sweep stops, the Optuna study keeps every result."""


def one_line(exc: BaseException) -> str:
    """The first line of an error's message, whitespace collapsed (library messages run over many lines)."""
    lines = str(exc).strip().splitlines()
    return " ".join(lines[0].split()) if lines else type(exc).__name__


def describe(exc: BaseException) -> str:
    """An error as one line for people: its type, and its message when it has one (Ctrl-C has none)."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
