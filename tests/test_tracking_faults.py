"""A tracking server that dies mid-train, and two first trainings at once: real processes.

A real ``mlflow server`` on 127.0.0.1 is killed (SIGKILL) while a real ``mlops train``
subprocess logs to it: the command must end within a bounded time (MLflow's retries are
bounded by the project's defaults), exit 4 with one message naming the server, print no
traceback, and leave nothing a later command would serve or gate: ``mlops doctor`` lists
the incomplete version and ends its run FAILED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from servers import TrackingServer

REPO = Path(__file__).resolve().parents[1]
MLOPS = str(Path(sys.executable).with_name("mlops"))
MODEL = "breast-cancer-classifier"
EXIT_BOUND_SECONDS = 60.0  # the bound; measured ~10 s after the kill on an idle machine


def _environment(state: Path, tracking_uri: str | None = None) -> dict[str, str]:
    env = {**os.environ, "MLOPS_STATE_DIR": str(state)}
    if tracking_uri:
        env["MLOPS_TRACKING_URI"] = tracking_uri
    return env


def _train_killing_the_server(tracking: TrackingServer, state: Path, ready) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``mlops train``; kill the server once ``ready()`` holds; return the result and seconds from kill to exit."""
    process = subprocess.Popen([MLOPS, "train"], cwd=REPO, env=_environment(state, tracking.url),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is not None:
        raise AssertionError(f"the training ended before the fault: {process.communicate()[1].decode()[-3000:]}")
    tracking.kill()
    killed = time.monotonic()
    stdout, stderr = process.communicate(timeout=300)
    elapsed = time.monotonic() - killed
    return subprocess.CompletedProcess(process.args, process.returncode, stdout.decode(), stderr.decode()), elapsed


def _versions(tracking: TrackingServer) -> list[dict]:
    try:
        return tracking.get("model-versions/search", filter=f"name='{MODEL}'").get("model_versions", [])
    except httpx.HTTPError:
        return []


def _running_runs(tracking: TrackingServer) -> list[dict]:
    experiments = tracking.get("experiments/search", max_results=100).get("experiments", [])
    ids = [experiment["experiment_id"] for experiment in experiments]
    found = httpx.post(f"{tracking.url}/api/2.0/mlflow/runs/search", timeout=10,
                       json={"experiment_ids": ids, "filter": "attributes.status = 'RUNNING'"}).json()
    return found.get("runs", [])


def _assert_clean_failure(result: subprocess.CompletedProcess, elapsed: float, tracking: TrackingServer) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 4, output[-3000:]
    assert elapsed < EXIT_BOUND_SECONDS, f"{elapsed:.0f} s from the kill to the exit"
    assert "Traceback" not in output, output[-3000:]
    # stderr is not a terminal: every line is a JSON log line (logs.format auto), the error one of them
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    errors = [line["message"] for line in lines if line["level"] == "error" and line["logger"] == "mlops.cli"]
    assert len(errors) == 1 and f"127.0.0.1:{tracking.port}" in errors[0] and "mlops doctor" in errors[0], errors


@pytest.mark.slow
def test_train__tracking_server_killed_mid_train_exits_4_and_doctor_cleans(tracking: TrackingServer, tmp_path: Path):
    state = tmp_path / "state"
    # Killed right after the version is registered: the version exists, the gate has not judged it.
    result, elapsed = _train_killing_the_server(tracking, state, lambda: bool(_versions(tracking)))
    _assert_clean_failure(result, elapsed, tracking)
    print(f"killed after registration: exit {result.returncode} {elapsed:.1f} s after the kill")

    tracking.start()
    [version] = _versions(tracking)
    tags = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
    assert tags.get("mlops.status") == "incomplete"

    # Killed while the next training logs its trials (a run exists, no version yet).
    before = {run["info"]["run_id"] for run in _running_runs(tracking)}
    result, elapsed = _train_killing_the_server(
        tracking, state, lambda: bool({run["info"]["run_id"] for run in _running_runs(tracking)} - before)
    )
    _assert_clean_failure(result, elapsed, tracking)
    print(f"killed while logging: exit {result.returncode} {elapsed:.1f} s after the kill")

    tracking.start()
    assert _running_runs(tracking), "the killed training left its run RUNNING (what doctor must end)"
    doctor = subprocess.run([MLOPS, "doctor"], cwd=REPO, env=_environment(state, tracking.url),
                            capture_output=True, text=True, timeout=300)
    assert doctor.returncode == 0, doctor.stderr
    assert f"version {version['version']}: incomplete" in doctor.stdout, doctor.stdout
    assert "ended FAILED" in doctor.stdout, doctor.stdout
    assert _running_runs(tracking) == []
    model = tracking.get("registered-models/get", name=MODEL)["registered_model"]
    assert not model.get("aliases"), "no alias may point at an incomplete version"

    promote = subprocess.run([MLOPS, "promote", version["version"], "--force"], cwd=REPO,
                             env=_environment(state, tracking.url), capture_output=True, text=True, timeout=300)
    assert promote.returncode == 2 and "incomplete" in promote.stderr, promote.stderr


@pytest.mark.slow
def test_train__two_first_trainings_at_once_both_succeed(tmp_path: Path):
    state = tmp_path / "fresh"  # no store yet: both processes race to create and migrate it
    trainings = [
        subprocess.Popen([MLOPS, "train"], cwd=REPO, env=_environment(state), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    results = [(process.wait(timeout=600), *process.communicate()) for process in trainings]
    for code, _stdout, stderr in results:
        assert code == 0, stderr[-3000:]
        assert "duplicate column" not in stderr
    # Prefect's database was created once, under the state folder's lock (mlops.orchestration.ensure_database).
    assert (state / "prefect" / "prefect.db.ready").is_file()
