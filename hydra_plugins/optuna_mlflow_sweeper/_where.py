"""Where a run came from and where to look at it: the tags every run carries (command, user, git commit) and the
MLflow UI page of a run (the machine-learning view's run page, not the GenAI overview MLflow opens on)."""

from __future__ import annotations

import getpass
import subprocess
import sys
from functools import lru_cache
from typing import Optional
from urllib.parse import urlparse

from ._redact import redact

UI = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def ui_url(tracking_uri: str, experiment_id: str, run_id: Optional[str] = None) -> str:
    """A run's page in the MLflow UI (the machine-learning view, not the GenAI overview it opens on by default)."""
    if tracking_uri.startswith(("http://", "https://")):
        parsed = urlparse(tracking_uri)
        base = parsed._replace(netloc=parsed.netloc.rpartition("@")[2], query="", fragment="").geturl().rstrip("/")
    else:
        base = UI
    page = f"runs/{run_id}" if run_id else ""
    # MLflow 3.17's UI opens on its GenAI view unless the link asks for the machine-learning one
    return f"{base}/#/experiments/{experiment_id}/{page}".rstrip("/") + "?workflowType=machine_learning"


def how_to_open(tracking_uri: str, experiment_id: str, run_id: str) -> list[str]:
    """What a person does to look at a run: for a store without a server, start `mlflow ui` first."""
    lines = []
    if not tracking_uri.startswith(("http://", "https://")):
        lines.append(f"mlflow ui -w 1 --backend-store-uri {redact(tracking_uri)}   (start it first, then open:)")
    return [*lines, ui_url(tracking_uri, experiment_id, run_id)]


def source_tags() -> dict[str, str]:
    """Where a run came from, as MLflow shows it: the command (entry point), the user, the git commit."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    entry = f"python -m {spec.name}" if spec is not None and spec.name else " ".join(sys.argv[:1]) or "python"
    tags = {"mlflow.source.name": entry, "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser()}
    commit = _git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


@lru_cache(maxsize=1)
def _git_commit() -> Optional[str]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() if commit.returncode == 0 and commit.stdout.strip() else None
