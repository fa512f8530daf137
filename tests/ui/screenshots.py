"""Screenshots of what a person sees in the MLflow UI after a sweep, for the README (not part of the test suite).

    pip install playwright && sudo apt-get install chromium       # once (Playwright drives Debian's Chromium)
    python -m tests.ui.screenshots                               # writes docs/img/mlflow_*.png

It runs a small sweep on the synthetic twin into a temporary store, starts a real `mlflow ui` on a free loopback
port, opens the URL the sweep printed, and takes: the parent run's page (its description summarises the study), and
the runs list with the parent expanded (its trials, pruned ones named so, and the packaged model), and the registered
version (its decision, threshold and cost model). It checks on the way that the printed link opens the "Model
training" view (the link's query and the experiment's tag). Rerun it after an MLflow upgrade changes the UI.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.helpers.cli import ROOT
from tests.helpers.servers import free_port

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SWEEP = ["dataset=synthetic", "dataset.n_rows=20000", "dataset.fraud_rate=0.01", "model.n_estimators=20",
         "model.n_jobs=1", "evaluation.bootstrap_samples=200", "hydra.sweeper.n_trials=8"]


def sweep(store: Path) -> str:
    """The parent run's URL, as the sweep prints it on its last line."""
    out = subprocess.run([sys.executable, "-m", "src.train", "--multirun", *SWEEP,
                          f"mlflow.tracking_uri=sqlite:///{store / 'mlflow.db'}",
                          f"hydra.sweeper.storage=sqlite:///{store / 'optuna.db'}", f"hydra.sweep.dir={store / 's'}"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return next(line.strip() for line in reversed(out.stdout.splitlines()) if "/#/experiments/" in line)


def start_ui(store: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "-w", "1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            time.sleep(1)
    raise RuntimeError("mlflow ui did not start")


def check_the_link(url: str, store: Path) -> None:
    """The link opens the "Model training" view: MLflow 3.17 reads the query, newer UIs the experiment's tag."""
    from mlflow.tracking import MlflowClient

    assert url.endswith("?workflowType=machine_learning"), url
    experiment = url.split("/#/experiments/")[1].split("/")[0]
    kind = MlflowClient(f"sqlite:///{store / 'mlflow.db'}").get_experiment(experiment).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development", kind


def shoot(url: str, out_dir: Path, chromium: str, model: str = "CreditCardFraud_RF_synthetic") -> None:
    from playwright.sync_api import sync_playwright

    experiment = url.split("/#/experiments/")[1].split("/")[0]
    base = url.split("/#/")[0]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 950})

        def settle() -> None:
            page.wait_for_timeout(4000)
            assistant = page.get_by_role("button", name="Close")
            if assistant.count():  # MLflow's assistant panel opens on the right: not what this is about
                assistant.first.click()
                page.wait_for_timeout(500)

        page.goto(url)  # what the sweep printed: the parent run, in the Model training view
        settle()
        assert "workflowType=machine_learning" in page.url and "Against the configured model" in page.content()
        page.screenshot(path=str(out_dir / "mlflow_parent_run.png"))
        page.goto(f"{base}/#/experiments/{experiment}?workflowType=machine_learning")  # Runs, Model training
        settle()
        parent = page.locator(".ag-row").first.locator('[col-id="attributes.`Run Name`"] button')
        parent.first.click()  # expand the parent: its trials and the packaged model
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out_dir / "mlflow_runs_expanded.png"))
        page.goto(f"{base}/#/models/{model}/versions/1")  # the registered version: its decision and operating point
        settle()
        assert "decision_threshold" in page.content()
        page.screenshot(path=str(out_dir / "mlflow_model_version.png"), full_page=True)
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "docs" / "img"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ui-") as tmp:
        store = Path(tmp)
        url = sweep(store)
        check_the_link(url, store)
        port = free_port()
        ui = start_ui(store, port)
        try:
            shoot(url.replace("127.0.0.1:5000", f"127.0.0.1:{port}"), out_dir, args.chromium)
        finally:
            ui.terminate()
            ui.wait(30)
    print(f"screenshots in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
