"""The public job module: what a task may import from the sweeper plugin (checks and redaction)."""

import socket

import pytest

from hydra_plugins.optuna_mlflow_sweeper.job import StoreError, check_tracking_uri, how_to_open, redact


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "uri, fragment",
    [
        ("sqlite:////nonexistent/folder/mlflow.db", "folder /nonexistent/folder does not exist"),
        ("sqlite://", "write a SQLite store as sqlite:///path/to/mlflow.db"),
        ("file:///tmp/mlruns", "file stores are not supported"),
        ("./mlruns", "file stores are not supported"),
        ("ftp://example.org/x", "unknown scheme 'ftp'"),
    ],
)
def test_bad_tracking_uris(uri, fragment):
    with pytest.raises(StoreError) as info:
        check_tracking_uri(uri)
    assert fragment in str(info.value)


def test_unreachable_tracking_server_fails_fast():
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(StoreError, match="tracking server unreachable"):
        check_tracking_uri(uri)


@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://me:s3cret@db:5432/optuna", "postgresql://me:***@db:5432/optuna"),
        ("postgresql+psycopg://me:p%40ss@127.0.0.1/x", "postgresql+psycopg://me:***@127.0.0.1/x"),
        ("sqlite:////tmp/o.db", "sqlite:////tmp/o.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://tok3n@mlflow.example.org/x", "https://***@mlflow.example.org/x"),  # a bare token
        ("https://h/api?token=tok3n&x=1", "https://h/api?token=***&x=1"),
        ("postgresql://h/db?user=me&password=s3cret", "postgresql://h/db?user=me&password=***"),
        ("mysql://me:p@ss@h:3306/db", "mysql://me:***@h:3306/db"),  # an unencoded @ in the password
    ],
)
def test_redact(url, shown):
    assert redact(url) == shown


ML = "?workflowType=machine_learning"  # MLflow 3.17's UI: the "Model training" view, not its GenAI overview


@pytest.mark.parametrize("uri, lines", [
    ("sqlite:////tmp/m.db", ["mlflow ui -w 1 --backend-store-uri sqlite:////tmp/m.db   (start it first, then open:)",
                             f"http://127.0.0.1:5000/#/experiments/3/runs/abc{ML}"]),
    ("postgresql://me:pw@db/mlflow", ["mlflow ui -w 1 --backend-store-uri postgresql://me:***@db/mlflow   (start it "
                                      "first, then open:)", f"http://127.0.0.1:5000/#/experiments/3/runs/abc{ML}"]),
    ("http://127.0.0.1:5055", [f"http://127.0.0.1:5055/#/experiments/3/runs/abc{ML}"]),  # a server serves the UI
    ("https://me:pw@mlflow.example.org/", [f"https://mlflow.example.org/#/experiments/3/runs/abc{ML}"]),  # no userinfo
])
def test_where_to_look_is_the_run_page_and_never_shows_a_password(uri, lines):
    assert how_to_open(uri, "3", "abc") == lines
