"""The whole continuous-training loop as a user runs it, with real processes throughout.

A weak champion is deployed behind the swap proxy; a client sends a drifted stream
without pause; `mlops schedule` runs monitoring on its interval, which detects the
drift, retrains once (the cooldown holds back the repeated detections), promotes the
better model, deploys it through the safe swap and sends an alert, while every
request the client sent is answered.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from waiting import wait_for

from mlops.data import load_table
from mlops.serving import free_port

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")


class Client(threading.Thread):
    """Sends one record per request without pause (~50 per second); counts every answer that is not a 200.

    Paced: an unpaced client, the proxy and the model server would take both cores from
    the scheduler, the retrain and the new server starting, all of which this test waits for.
    """

    def __init__(self, url: str, records: list[dict]) -> None:
        super().__init__(daemon=True)
        self.url, self.records = url, records
        self.ok, self.failed, self.versions = 0, [], set()
        self.running = True

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=30) as client:
            index, next_at = 0, time.monotonic()
            while self.running:
                next_at += 0.02
                time.sleep(max(0.0, next_at - time.monotonic()))
                record = self.records[index % len(self.records)]
                index += 1
                try:
                    response = client.post(f"{self.url}/predict", json={"records": [record]})
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                    continue
                if response.status_code == 200:
                    self.ok += 1
                    self.versions.add(response.json()["model_version"])
                else:
                    self.failed.append(f"{response.status_code} {response.text[:200]}")


def _drifted_stream(contract_path: Path) -> list[dict]:
    """Shifted rows the contract accepts (so every answer must be a 200), plus a few reference rows."""
    from mlops.contract import load_contract
    from mlops.request_check import RequestRefused, check_from_contract

    check = check_from_contract(load_contract(contract_path))
    shifted = load_table(REPO / "data" / "current.csv").drop(columns=["target"]).to_dict("records")
    accepted = []
    for record in shifted:
        try:
            check.records([record])
        except RequestRefused:
            continue
        accepted.append(record)
    reference = load_table(REPO / "data" / "train.csv").drop(columns=["target"]).head(10).to_dict("records")
    return accepted + reference


@pytest.mark.slow
def test_continuous_training__drift_on_served_traffic_retrains_once_promotes_and_redeploys_with_no_failed_request(
    tmp_path, receiver
):
    from mlflow.tracking import MlflowClient

    state = tmp_path / "state"
    alerts_url, alerts = receiver
    env = {
        **os.environ,
        "MLOPS_STATE_DIR": str(state),
        "MLOPS_SERVING__PORT": str(free_port()),
        "MLOPS_SCHEDULES__PREFECT_PORT": str(free_port()),
        "MLOPS_SCHEDULES__MONITORING_INTERVAL_MINUTES": "0.25",
        "MLOPS_MONITORING__COOLDOWN_MINUTES": "60",
        "MLOPS_MONITORING__RETRAIN_WITHOUT_LABELS": "true",  # no labels arrive in this test: retrain on the file
        "MLOPS_ALERTS__WEBHOOK_URL": alerts_url,
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    }

    def mlops(*args: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(MLOPS), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"mlops {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    # A weak champion: a third of its training labels are wrong.
    weak = load_table(REPO / "data" / "train.csv")
    flipped = weak.sample(frac=0.35, random_state=0).index
    weak.loc[flipped, "target"] = 1 - weak.loc[flipped, "target"]
    weak_path = tmp_path / "weak.csv"
    weak.to_csv(weak_path, index=False)
    mlops("train", "--data", str(weak_path))
    mlops("deploy")
    deploy_state = json.loads((state / "deploy" / "state.json").read_text())
    client = Client(deploy_state["url"], _drifted_stream(REPO / "data" / "contracts" / "breast_cancer.yaml"))
    client.start()
    log = open(tmp_path / "schedule.log", "wb")
    schedule = subprocess.Popen([str(MLOPS), "schedule"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    registry = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")
    try:
        def deployed_version() -> str:
            return json.loads((state / "deploy" / "state.json").read_text())["backend"]["version"]

        wait_for(lambda: deployed_version() == "2", 420, "v2 deployed", interval=2,
                 detail=lambda: (tmp_path / "schedule.log").read_text()[-4000:])
        # Let monitoring see the drift again: the cooldown must hold the second retrain back.
        monitoring_runs = lambda: registry.search_runs(  # noqa: E731
            [e.experiment_id for e in registry.search_experiments() if e.name.endswith("-monitoring")]
        )
        count = len(monitoring_runs())
        wait_for(lambda: len(monitoring_runs()) >= count + 1, 240, "another monitoring run", interval=2)
    finally:
        client.running = False
        client.join(60)
        schedule.send_signal(signal.SIGTERM)
        schedule.wait(120)
        log.close()
        subprocess.run([str(MLOPS), "deploy", "stop"], cwd=REPO, env=env, capture_output=True, timeout=120)
    assert client.failed == [], client.failed[:5]
    assert client.ok > 50 and client.versions == {"1", "2"}
    champion = registry.get_model_version_by_alias("breast-cancer-classifier", "champion")
    assert str(champion.version) == "2" and champion.tags["mlops.gate.decision"] == "promoted"
    experiment = registry.get_experiment_by_name("breast-cancer")
    retrains = registry.search_runs([experiment.experiment_id], "tags.`mlops.trigger` = 'drift'")
    assert len([run for run in retrains if run.data.tags.get("mlops.trial") != "true"]) == 1, "exactly one retrain"
    assert "drift_detected" in {alert["event"] for alert in alerts}
