"""/metrics of a running server against other starts in its state folder, and the prediction log's counters.

Real ``bentoml serve`` processes on 127.0.0.1: BentoML empties its Prometheus
multiprocess folder on every start, so each server must have one of its own; and a
prediction log that cannot be written must show in /metrics and in one server-log
line per failure episode.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from registered import features, register, set_champion
from waiting import wait_for

from mlops.config import Settings, load_settings
from mlops.environment import tool_environment
from mlops.serving import ServerProcess, free_port, import_model, start_server

UNWRITABLE = "Cannot write the prediction log"


@pytest.fixture(scope="module")
def settings_and_tag(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, str]]:
    settings = load_settings(state_dir=tmp_path_factory.mktemp("metrics") / "state")
    with tool_environment(settings):
        version = register(settings, C=1.0)
        set_champion(settings, version)
        yield settings, import_model(settings.model.name, version)


@pytest.fixture(scope="module")
def predictions_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Server A's prediction log, apart from the state folder's (the test replaces it with a file)."""
    return tmp_path_factory.mktemp("predictions-a")


@pytest.fixture(scope="module")
def server(settings_and_tag: tuple[Settings, str], predictions_dir: Path) -> Iterator[ServerProcess]:
    settings, tag = settings_and_tag
    with start_server(settings, tag, port=free_port(), predictions_dir=predictions_dir) as running:
        yield running


def _predict(server: ServerProcess, count: int) -> None:
    records = features().head(2).to_dict(orient="records")
    for _ in range(count):
        assert httpx.post(f"{server.url}/predict", json={"records": records}, timeout=30).status_code == 200


def _metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and line[len(name)] in " {")


@pytest.mark.slow
def test_metrics__counters_survive_another_server_started_and_stopped_in_the_state_folder(
    server: ServerProcess, settings_and_tag: tuple[Settings, str]
):
    settings, tag = settings_and_tag
    _predict(server, 5)
    wait_for(lambda: _metric(server, "mlops_prediction_log_written_total") >= 10)
    requests_before = _metric(server, "bentoml_service_request_total")
    assert _metric(server, "mlops_prediction_log_written_total") >= 10
    assert requests_before >= 5

    other_port = free_port()
    other = start_server(settings, tag, port=other_port)  # BentoML clears its Prometheus folder on start
    other.stop()

    assert not (settings.bentoml_home / "servers" / str(other_port)).exists(), "a stopped server's folder is removed"
    assert (settings.bentoml_home / "servers" / str(server.port)).is_dir()
    assert _metric(server, "mlops_prediction_log_written_total") >= 10, "the running server's counters were reset"
    assert _metric(server, "bentoml_service_request_total") >= requests_before


@pytest.mark.slow
def test_prediction_log__unwritable_folder_is_counted_and_logged_once_per_episode(
    server: ServerProcess, predictions_dir: Path
):
    folder = predictions_dir
    dropped_before = _metric(server, "mlops_prediction_log_dropped_total")
    shutil.rmtree(folder)
    folder.write_text("not a folder")  # chmod does not stop root: a file where the folder was does
    try:
        _predict(server, 8)  # 2 records each
        wait_for(lambda: _metric(server, "mlops_prediction_log_dropped_total") >= dropped_before + 16)
        assert _metric(server, "mlops_prediction_log_dropped_total") >= dropped_before + 16
        assert _metric(server, "mlops_prediction_log_failures_total") >= 1
    finally:
        folder.unlink()
    _predict(server, 1)  # the folder is back: the log writes again, and says so once
    wait_for(lambda: "is written again" in server.log_path.read_text())
    log = server.log_path.read_text()
    assert log.count(UNWRITABLE) == 1, log[-3000:]
    assert log.count("is written again") == 1, log[-3000:]
    assert "Traceback" not in log

