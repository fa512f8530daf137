"""Where the sweep's words go: results on stdout (a `> report.txt` keeps them), progress and diagnostics on
stderr."""

from __future__ import annotations

import sys


def say(text: str) -> None:
    """Progress and diagnostics: stderr."""
    print(text, file=sys.stderr, flush=True)


def result(text: str) -> None:
    """Results (the table, the best, where to look): stdout."""
    print(text, flush=True)
