"""The stores a sweep and its jobs share, opened safely: each tool only in its own database, a fresh SQLite file
created whole or not at all (whatever runs at the same moment or dies half-way), one-line errors that name the URI
(secrets redacted) and the fix. Published to tasks by job.py.

Invariants:
- before MLflow or Optuna writes to a SQLite file, its tables are read (read-only): the other tool's database, a file
  that is not a database, or a folder, is refused;
- a missing SQLite file is created in a temporary file beside it and renamed into place under a lock, so that any
  number of processes starting together all see one complete store, and an interruption leaves no half-migrated one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import importlib
import os
import socket
import sqlite3
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

from ._redact import redact

SQLITE_HEADER = b"SQLite format 3\x00"
OWNERS = {"mlflow": {"experiments", "runs"}, "optuna": {"studies", "trials", "version_info"}}
USE = {"mlflow": "sqlite:///mlflow.db", "optuna": "sqlite:///multirun_outputs/optuna.db"}


class StoreError(ValueError):
    """A store that cannot be used: the message names the key, the URI (redacted) and the fix."""


_UNREACHABLE = ("Max retries exceeded", "Connection refused", "Failed to establish a new connection",
                "Read timed out", "RemoteDisconnected", "Connection aborted", "Connection reset")


def is_unreachable(exc: BaseException) -> bool:
    """The tracking server is gone (as opposed to a bad request, which is a bug to surface): a job may go on
    without it, and the sweeper repairs its run from the study once the server is back."""
    text = f"{type(exc).__name__}: {exc}"
    return isinstance(exc, ConnectionError) or any(s in text for s in _UNREACHABLE)


def is_integrity_race(exc: BaseException) -> bool:
    """Another process inserted the same row first (a database's unique constraint): retrying finds it."""
    text = f"{type(exc).__name__} {exc} {exc.__cause__}"
    return any(s in text for s in ("UniqueViolation", "IntegrityError", "UNIQUE constraint", "already exists",
                                   "duplicate key"))


def sqlite_path(url: str) -> Optional[Path]:
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path).expanduser()


def sqlite_owner(path: Path) -> Optional[str]:
    """Which tool's tables a SQLite file holds: "mlflow", "optuna", None (a new or empty file), or "other: ..."."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with open(path, "rb") as fh:
        if fh.read(16) != SQLITE_HEADER:
            return "not a database"
    tables = None
    # Read-write first: after a crash the file may hold a hot journal, which SQLite rolls back on the next open
    # and which a read-only connection refuses ("attempt to write a readonly database"). Reading the table list
    # adds nothing. Read-only for a store on a read-only file system.
    for mode in ("rw", "ro"):
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=30)) as con:
                tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            break
        except sqlite3.OperationalError:
            if mode == "ro":
                raise
    if not tables:
        return None
    for owner, marks in OWNERS.items():
        if marks <= tables:
            return owner
    return "other: " + ", ".join(sorted(tables)[:5])


def check_sqlite(url: str, key: str, tool: str) -> None:
    """A SQLite URL ``tool`` may write to: a file (or none yet) in an existing writable folder, holding no other
    tool's tables."""
    path = sqlite_path(url)
    shown = redact(url)
    if path is None:
        raise StoreError(f"{key}={shown}: write a SQLite store as sqlite:///path/to/{tool}.db")
    if path.is_dir():
        raise StoreError(f"{key}={shown}: {path} is a folder; name a database file in it, e.g. {path / (tool + '.db')}")
    if not path.parent.is_dir():
        raise StoreError(f"{key}={shown}: folder {path.parent} does not exist (create it first)")
    if not os.access(path.parent, os.W_OK) and not path.exists():
        raise StoreError(f"{key}={shown}: folder {path.parent} is not writable")
    try:
        owner = sqlite_owner(path)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"{key}={shown}: cannot read {path} ({exc})") from None
    if owner in (None, tool):
        return
    if owner == "not a database":
        raise StoreError(f"{key}={shown}: {path} is not a SQLite database; name a new file, e.g. {USE[tool]}")
    kinds = {"mlflow": "an MLflow tracking store", "optuna": "an Optuna storage"}
    what = kinds.get(str(owner), f"another database ({owner})")
    raise StoreError(f"{key}={shown}: {path} is {what}; give {tool} its own database, e.g. {USE[tool]}")


def check_driver(url: str, key: str) -> None:
    """postgresql:// needs psycopg (SQLAlchemy 2.1's default driver for it), which the postgres extra installs."""
    if urlparse(url).scheme.split("+")[0] != "postgresql":
        return
    try:
        importlib.import_module("psycopg")
    except ImportError as exc:
        raise StoreError(f"{key}={redact(url)}: the PostgreSQL driver cannot be imported ({exc}): "
                         f"pip install -e '.[postgres]'") from None


DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}


def check_database(url: str, key: str) -> None:
    """A database server that accepts connections (ten seconds at most), before a library retries for minutes."""
    parsed = urlparse(url)
    scheme = parsed.scheme.split("+")[0]
    host, port = parsed.hostname, parsed.port or DEFAULT_PORTS.get(scheme)
    if not host or not port:
        return  # a local socket: the driver reports
    try:
        with socket.create_connection((host, port), timeout=10):
            pass
    except OSError as exc:
        raise StoreError(f"{key}={redact(url)}: cannot connect to the database at {host}:{port} "
                         f"({exc.strerror or exc}); start it or fix the URL") from None


@contextlib.contextmanager
def _lock_beside(path: Path) -> Iterator[None]:
    with open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def create_whole(url: str, key: str, create: Callable[[str], None]) -> None:
    """Make sure a SQLite store exists, created whole: ``create(temporary_url)`` builds the schema in a temporary
    file beside it, which is then renamed into place; other processes wait on a lock meanwhile."""
    path = sqlite_path(url)
    if path is None or (path.exists() and path.stat().st_size > 0):
        return
    with _lock_beside(path):
        if path.exists() and path.stat().st_size > 0:
            return  # another process created it meanwhile
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".creating")
        os.close(fd)
        try:
            create(f"sqlite:///{tmp}")
            os.chmod(tmp, 0o666 & ~_umask())  # as sqlite3 would have created it (mkstemp makes it private)
            os.replace(tmp, path)
        except OSError as exc:
            raise StoreError(f"{key}={redact(url)}: cannot create {path} ({exc.strerror or exc}); free space or "
                             f"choose another folder, then rerun") from None
        except Exception as exc:
            if "disk is full" in str(exc) or "disk I/O" in str(exc):
                raise StoreError(f"{key}={redact(url)}: cannot create {path}: the disk is full; free space and "
                                 f"rerun") from None
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_tracking_uri(uri: str, key: str = "mlflow.tracking_uri", writable: bool = True) -> None:
    """Fail in one line, before any work, when runs could not be stored at ``uri``."""
    try:
        parsed = urlparse(uri)
        scheme = parsed.scheme.split("+")[0]
        parsed.port  # noqa: B018  (a malformed port or IPv6 address raises here)
    except ValueError as exc:
        raise StoreError(f"{key}={redact(uri)}: not a valid URI ({exc})") from None
    shown = redact(uri)
    if scheme == "sqlite":
        path = sqlite_path(uri)
        if not writable and path is not None and path.is_file():
            if sqlite_owner(path) != "mlflow":
                raise StoreError(f"{key}={shown}: {path} is not an MLflow tracking store")
        else:
            check_sqlite(uri, key, "mlflow")
    elif scheme in ("http", "https"):
        _check_server(parsed, key, shown)
    elif scheme in ("postgresql", "mysql", "mssql"):
        check_driver(uri, key)
        check_database(uri, key)
    elif scheme == "databricks":
        pass
    elif scheme in ("file", "") or len(scheme) == 1:  # bare paths, Windows drive letters
        raise StoreError(f"{key}={shown}: file stores are not supported by MLflow 3 here; "
                         f"use sqlite:///mlflow.db or an http:// tracking server")
    else:
        raise StoreError(f"{key}={shown}: unknown scheme {scheme!r}; use sqlite:///..., "
                         f"http(s)://host:port or a database URL")


def _check_server(parsed, key: str, shown: str) -> None:
    # urllib takes no user:password@ in a URL (MLflow's client does): ask without it, as HTTP basic auth.
    request = urllib.request.Request(parsed._replace(netloc=parsed.netloc.rpartition("@")[2]).geturl()
                                     .rstrip("/") + "/health")
    if parsed.username is not None:
        token = base64.b64encode(f"{unquote(parsed.username)}:{unquote(parsed.password or '')}".encode())
        request.add_header("Authorization", f"Basic {token.decode()}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = redact(str(getattr(exc, "reason", exc)))
        raise StoreError(f"{key}={shown}: tracking server unreachable ({reason}); start it "
                         f"(mlflow server --host 127.0.0.1 ...) or fix the URI") from None


def limit_http_retries() -> None:
    """MLflow retries an unreachable server for about 4 minutes per call by default; notice an outage within about
    half a minute instead (unless the user set these variables)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


def artifact_location(tracking_uri: str) -> Optional[str]:
    """Artifacts beside a SQLite store (MLflow would otherwise write ./mlruns wherever the process runs)."""
    path = sqlite_path(tracking_uri)
    return (path.resolve().parent / "mlruns").as_uri() if path is not None else None


def _create_mlflow_schema(tmp_url: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore(tmp_url, default_artifact_root=str(Path(tmp_url[len("sqlite:///"):]).parent / "mlruns"))
    store.engine.dispose()


# Newer MLflow UIs open an experiment in its "Model training" view (not the GenAI one) when it says it is one.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"


def open_experiment(tracking_uri: str, name: str, key: str = "mlflow.tracking_uri") -> str:
    """The experiment's id, created if needed; several processes creating the store or the experiment at once
    all get the same one."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    create_whole(tracking_uri, key, _create_mlflow_schema)
    try:
        client = MlflowClient(tracking_uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return client.create_experiment(name, artifact_location=artifact_location(tracking_uri),
                                                tags={KIND_TAG: TRAINING_KIND})
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another worker created it first: use it
                    raise
                experiment = client.get_experiment_by_name(name)
        if experiment.lifecycle_stage != "deleted" and experiment.tags.get(KIND_TAG) != TRAINING_KIND:
            client.set_experiment_tag(experiment.experiment_id, KIND_TAG, TRAINING_KIND)
    except Exception as exc:  # MLflow's own errors and the database driver's
        text = str(getattr(exc, "message", None) or exc).strip()
        first = " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
        raise StoreError(f"{key}={redact(tracking_uri)}: {redact(first)[:300]}") from None
    if experiment.lifecycle_stage == "deleted":
        raise StoreError(f"MLflow experiment {name!r} is deleted: restore it (mlflow experiments restore "
                         f"--experiment-id {experiment.experiment_id}) or choose another experiment name")
    return experiment.experiment_id
