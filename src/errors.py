"""Expected errors, and the one way an error is shown to a person: one line, secrets redacted."""

from __future__ import annotations

import re

from hydra_plugins.optuna_mlflow_sweeper.job import redact


class UserError(Exception):
    """An expected problem with the user's input: reported as one line, never as a traceback."""


_NOT_A_NUMBER = re.compile(r"could not be converted to (Float|Integer)$")


def one_line(exc: BaseException) -> str:
    """An error's message on one line: whitespace collapsed, a library's own cause appended (its first line), any
    URL's secrets redacted. Hydra's "missing config" lists the choices instead."""
    from hydra.errors import MissingConfigException

    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and exc.options:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return f"unknown {group} '{name}': choose one of {', '.join(exc.options)} (e.g. {group}={exc.options[0]})"
    message = str(exc).strip()
    if hasattr(exc, "error_code"):  # MLflow's messages may carry a server's whole response: its first line says it
        message = message.splitlines()[0] if message else ""
    text = " ".join(message.split()) or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and not isinstance(exc, UserError) and str(cause).strip():
        text += " - " + " ".join(str(cause).strip().splitlines()[0].split())
    if _NOT_A_NUMBER.search(text):  # OmegaConf's conversion error names the key and the value, not the fix
        text += ": give a number"
    return redact(text)


def disk_full(exc: BaseException) -> str | None:
    """One line for a full disk (an OSError ENOSPC, or SQLite's "database or disk is full"), or None for
    anything else."""
    import errno

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.ENOSPC:
            where = f" writing {seen.filename}" if seen.filename else ""
            return f"the disk is full{where}: free space and rerun the same command (the stores stay usable)"
        if "database or disk is full" in str(seen):
            return ("the disk holding the tracking or Optuna store is full: free space and rerun the same command "
                    "(the stores stay usable)")
        seen = seen.__cause__ or seen.__context__
    return None
