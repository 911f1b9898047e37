"""No secret is printed or stored: a tracking URI with a password, an API key, a webhook token.

Real commands (``mlops train``, ``mlops monitor``, ``mlops serve``) run against a real
``mlflow server`` reached through ``http://user:password@127.0.0.1:PORT`` (MLflow ignores
credentials it is not asked for), with an API key set and a webhook that answers 500.
Then stdout, stderr and every file of the state folder (logs, reports, the Prefect
database) and of the tracking server (its SQLite store, the artifacts) are searched for
each secret.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from servers import TrackingServer, webhook_receiver
from test_tracking_faults import MLOPS, REPO

from mlops.environment import redact
from mlops.serving import free_port

PASSWORD = "pw-Zq8xK2secret"
TOKEN = "tok7f3a9c2e1b5d4f60aa"
API_KEY = "key-9b1d2c3e4f5a6b7c"
SECRETS = (PASSWORD, TOKEN, API_KEY)


@pytest.fixture(scope="module")
def failing_webhook() -> Iterator[tuple[str, list[dict]]]:
    """A receiver that answers every alert with 500; yields its URL (holding the token) and what it was sent."""
    with webhook_receiver(500, f"/hooks/{TOKEN}?token={TOKEN}") as hook:
        yield hook


def test_redact__masks_url_credentials_and_known_secrets():
    assert redact("View run at http://me:hunter2@127.0.0.1:5000/#/x") == "View run at http://***@127.0.0.1:5000/#/x"
    assert redact("https://token@host/path") == "https://***@host/path"
    assert redact("sqlite:///state/mlflow.db") == "sqlite:///state/mlflow.db"


@pytest.mark.slow
def test_secrets__never_printed_nor_stored_by_train_monitor_serve_and_a_failing_webhook(
    tracking: TrackingServer, failing_webhook: tuple[str, list[str]], tmp_path: Path
):
    webhook, received = failing_webhook
    state = tmp_path / "state"
    env = {
        **os.environ,
        "MLOPS_STATE_DIR": str(state),
        "MLOPS_TRACKING_URI": f"http://mlops-user:{PASSWORD}@127.0.0.1:{tracking.port}",
        "MLOPS_ALERTS__WEBHOOK_URL": webhook,
        "MLOPS_API_KEY": API_KEY,
        "MLOPS_MONITORING__RETRAIN_ON_DRIFT": "false",
    }
    outputs = []
    for command in (["train"], ["monitor", "--current", "data/current.csv"]):
        done = subprocess.run([MLOPS, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs += [done.stdout, done.stderr]
    assert received, "the monitor's drift alert must have reached the failing webhook"
    assert "not delivered to webhook" in outputs[-1]

    port = free_port()
    serve = subprocess.Popen([MLOPS, "serve", "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(f"http://127.0.0.1:{port}", serve)
        records = {"records": [_first_record()]}
        url = f"http://127.0.0.1:{port}/predict"
        assert httpx.post(url, json=records, timeout=30).status_code == 401
        answer = httpx.post(url, json=records, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30)
        assert answer.status_code == 200, answer.text
    finally:
        serve.send_signal(signal.SIGINT)
        stdout, stderr = serve.communicate(timeout=60)
    outputs += [stdout, stderr]

    for secret in SECRETS:
        assert all(secret not in text for text in outputs), f"{secret} printed: {[t for t in outputs if secret in t]}"
    files = [path for folder in (state, tracking.folder) for path in folder.rglob("*") if path.is_file()]
    assert any(path.suffix == ".db" for path in files) and len(files) > 20
    for path in files:
        content = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in content, f"{secret} stored in {path}"


def _first_record() -> dict:
    import pandas as pd

    return pd.read_csv(REPO / "data" / "train.csv").drop(columns="target").iloc[0].to_dict()


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not ready after {timeout} s")
