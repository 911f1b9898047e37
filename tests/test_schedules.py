"""`mlops schedule`: a real local Prefect server, deployments served, a scheduled run that happens."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_for

from mlops.data import load_table
from mlops.prediction_log import PredictionLogWriter
from mlops.serving import free_port

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")


@pytest.mark.slow
def test_schedule__serves_deployments_and_runs_monitoring_on_its_interval(tmp_path):
    state = tmp_path / "state"
    writer = PredictionLogWriter(state / "predictions")
    shifted = load_table(REPO / "data" / "current.csv").drop(columns=["target"])
    writer.log(request_id="r1", model_name="m", model_version="1", inputs=shifted.to_dict("records"), predictions=[1] * 100)
    writer.close()
    port = free_port()
    env = {
        **os.environ,
        "MLOPS_STATE_DIR": str(state),
        "MLOPS_SCHEDULES__PREFECT_PORT": str(port),
        "MLOPS_SCHEDULES__MONITORING_INTERVAL_MINUTES": "0.25",
        "MLOPS_MONITORING__RETRAIN_ON_DRIFT": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }
    log = open(tmp_path / "schedule.log", "wb")
    process = subprocess.Popen([str(MLOPS), "schedule"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        reports = state / "reports"
        wait_for(lambda: list(reports.glob("drift-*.json")), 240, "a drift summary", interval=1,
                 detail=lambda: (tmp_path / "schedule.log").read_text()[-3000:])
        listing = subprocess.run([str(MLOPS), "schedule", "--list"], cwd=REPO, env=env, capture_output=True, text=True)
        assert listing.returncode == 0, listing.stderr
        assert "scheduled-monitoring" in listing.stdout and "scheduled-training" in listing.stdout
        assert "cron 0 3 * * *" in listing.stdout
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(120)
        log.close()
    wait_for(lambda: _port_free(port), 30, "the local Prefect server to stop with the command", interval=1)


def test_schedule_list__without_a_server_says_how_to_start_one(tmp_path):
    result = subprocess.run(
        [str(MLOPS), "--state-dir", str(tmp_path), "schedule", "--list"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "Start one with `mlops schedule`" in result.stdout


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0
