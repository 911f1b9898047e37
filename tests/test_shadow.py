"""Shadow mode against real components.

The proxy's copies are tested against a tiny real upstream (Starlette under uvicorn on
127.0.0.1): batching, the bounded queue, failures that never reach a client. The rest is
one story on one deployment with one shadow (each BentoML process takes ~10 s to start on
two cores), in file order: two versions registered by real training flow runs, the
champion deployed, the other version in shadow mode through the CLI, traffic, the
monitoring flow comparing both on labeled rows, the shadow stopped under traffic, then a
shadow again and the whole deployment stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from waiting import wait_for

from mlops.config import Settings, load_settings
from mlops.proxy import STATUS_PATH, SwapProxy, write_upstream
from mlops.service.settings import proxy_settings

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")


# --- the proxy's copies, against a real upstream ---------------------------------------


class Upstream:
    """A model server stand-in: ``/predict`` answers 200 with a request id (422 for ``{"bad": ...}``),
    ``/shadow/predict`` records each batch it gets, after ``delay`` seconds."""

    def __init__(self, delay: float = 0.0) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.delay = delay
        self.batches: list[tuple[dict[str, str], bytes]] = []

        async def predict(request: Request) -> JSONResponse:
            body = await request.body()
            if b'"bad"' in body:
                return JSONResponse({"error": "refused"}, status_code=422)
            request_id = request.headers.get("x-request-id") or f"id{len(body)}"
            return JSONResponse({"model_version": "1"}, headers={"x-request-id": request_id})

        async def shadow(request: Request) -> JSONResponse:
            body = await request.body()
            await asyncio.sleep(self.delay)
            self.batches.append((dict(request.headers), body))
            return JSONResponse({"scored": len(json.loads(body)["requests"]), "refused": 0})

        self.app = Starlette(routes=[
            Route("/predict", predict, methods=["POST"]),
            Route("/readyz", lambda request: JSONResponse({}, headers={"x-request-id": "r"})),
            Route("/shadow/predict", shadow, methods=["POST"]),
        ])  # fmt: skip

    def copies(self) -> list[dict]:
        return [copy for _, body in self.batches for copy in json.loads(body)["requests"]]


@contextmanager
def served(app) -> Iterator[str]:
    """``app`` under uvicorn on a free 127.0.0.1 port, in a thread; its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)


def _status(url: str) -> dict:
    return httpx.get(url + STATUS_PATH).json()


def _proxy(upstream_file: Path, serving: dict | None = None, **shadow) -> SwapProxy:
    """The proxy on ``upstream_file`` with the settings ``mlops deploy`` gives it, from these ``serving`` settings."""
    return SwapProxy(proxy_settings(Settings(serving=serving or {}), upstream_file), **shadow)


def test_proxy__copies_answered_predicts_to_the_shadow_in_batches_with_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("SHADOW_TEST_KEY", "s3cret")
    upstream, shadow = Upstream(), Upstream()
    with served(upstream.app) as upstream_url, served(shadow.app) as shadow_url:
        upstream_file = tmp_path / "upstream.json"
        write_upstream(upstream_file, upstream_url, shadow=shadow_url)
        with served(_proxy(upstream_file, {"api_key_env": "SHADOW_TEST_KEY"})) as proxy:
            bodies = {f"req-{i}": b'{"records": [{"x": %d}, {"x": %d}]}' % (i, -i) for i in range(30)}
            with httpx.Client(base_url=proxy) as client:
                answers = [client.post("/predict", content=body, headers={"x-request-id": rid}) for rid, body in bodies.items()]
                refused = client.post("/predict", content=b'{"bad": 1}', headers={"x-request-id": "bad-1"})
                other = client.get("/readyz")
            status = wait_for(lambda: (s := _status(proxy))["shadow"]["sent"] == len(bodies) and s, what="copies sent")

    assert [answer.status_code for answer in answers] == [200] * len(bodies) and answers[0].json()["model_version"] == "1"
    assert refused.status_code == 422 and other.status_code == 200
    copies = shadow.copies()
    assert [copy["request_id"] for copy in copies] == list(bodies)  # in order, each once, nothing else
    assert all(json.loads(bodies[copy["request_id"]]) == copy["body"] for copy in copies)
    sent_raw = b"".join(raw for _, raw in shadow.batches)  # the bodies went as sent, byte for byte
    assert all(b'"request_id":"%s","body":%s}' % (rid.encode(), body) in sent_raw for rid, body in bodies.items())
    assert 1 <= len(shadow.batches) < len(bodies)  # batched, not one call per request
    assert {headers["authorization"] for headers, _ in shadow.batches} == {"Bearer s3cret"}
    assert status["shadow"] | {"last_error": None} == {
        "upstream": shadow_url, "queued": 0, "sent": 30, "dropped": 0, "failed": 0, "refused": 0, "last_error": None,
    }  # fmt: skip


def test_proxy__full_queue_drops_copies_and_never_slows_clients(tmp_path):
    upstream, shadow = Upstream(), Upstream(delay=0.5)  # a shadow far slower than the champion
    with served(upstream.app) as upstream_url, served(shadow.app) as shadow_url:
        upstream_file = tmp_path / "upstream.json"
        write_upstream(upstream_file, upstream_url, shadow=shadow_url)
        with served(_proxy(upstream_file, shadow_queue=5, shadow_batch=2, shadow_linger=0.01)) as proxy:
            with httpx.Client(base_url=proxy) as client:
                timings = []
                for i in range(40):
                    started = time.perf_counter()
                    assert client.post("/predict", content=b'{"records": [{"x": %d}]}' % i).status_code == 200
                    timings.append(time.perf_counter() - started)
            status = wait_for(lambda: (s := _status(proxy)["shadow"])["queued"] == 0 and s["sent"] + s["dropped"] == 40
                               and s, timeout=30, what="queue drained")  # fmt: skip

    assert max(timings) < shadow.delay  # no client waited for the shadow
    assert status["dropped"] > 0 and status["failed"] == 0
    assert len(shadow.copies()) == status["sent"]


def test_proxy__a_shadow_that_is_down_fails_copies_not_clients(tmp_path):
    from mlops.serving import free_port

    upstream = Upstream()
    with served(upstream.app) as upstream_url:
        upstream_file = tmp_path / "upstream.json"
        nowhere = f"http://127.0.0.1:{free_port()}"
        write_upstream(upstream_file, upstream_url, shadow=nowhere)
        with served(_proxy(upstream_file, shadow_linger=0.01)) as proxy:
            with httpx.Client(base_url=proxy) as client:
                codes = [client.post("/predict", content=b'{"records": [{"x": 1}]}').status_code for _ in range(10)]
            status = wait_for(lambda: (s := _status(proxy)["shadow"])["failed"] == 10 and s, what="copies failed")

    assert codes == [200] * 10
    assert status["sent"] == 0 and "ClientConnectorError" in status["last_error"]


def test_proxy__upstream_file_without_a_shadow_key_still_serves(tmp_path):
    upstream = Upstream()
    with served(upstream.app) as upstream_url:
        upstream_file = tmp_path / "upstream.json"
        upstream_file.write_text(json.dumps({"upstream": upstream_url}))  # written before shadow mode
        with served(_proxy(upstream_file)) as proxy:
            answer = httpx.post(proxy + "/predict", content=b'{"records": [{"x": 1}]}')
            status = _status(proxy)

    assert answer.status_code == 200
    assert status["upstream"] == upstream_url and status["shadow"] is None


# --- one deployment with one shadow ------------------------------------------------------


@dataclass(frozen=True)
class Shadowed:
    settings: Settings
    champion: str  # trained on the training file
    challenger: str  # trained on a third of the labels flipped: it disagrees with the champion
    env: dict[str, str]
    truth: dict[tuple[str, int], int] = field(default_factory=dict)  # (request_id, record) -> label, as sent


@pytest.fixture(scope="module")
def shadowed(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Iterator[Shadowed]:
    from prefect.testing.utilities import prefect_test_harness

    from flows.training import training_flow
    from mlops.data import load_table
    from mlops.deployment import stop_deployment
    from mlops.environment import tool_environment
    from mlops.serving import free_port

    folder = tmp_path_factory.mktemp("shadow")
    settings = load_settings(
        state_dir=folder / "state", serving={"port": free_port()}, monitoring={"retrain_on_drift": False, "min_rows": 20}
    )
    settings.state_dir.mkdir(parents=True)
    shutil.copy(mlflow_db_template, settings.state_dir / "mlflow.db")
    weak = load_table(settings.data.training)
    flipped = weak.sample(frac=0.35, random_state=0).index
    weak.loc[flipped, "target"] = 1 - weak.loc[flipped, "target"]
    weak.to_csv(folder / "weak.csv", index=False)
    env = {**os.environ, "MLOPS_STATE_DIR": str(settings.state_dir), "MLOPS_SERVING__PORT": str(settings.serving.port)}
    with prefect_test_harness(server_startup_timeout=120), tool_environment(settings):
        champion = training_flow(settings).registered.version
        challenger = training_flow(settings, data_path=folder / "weak.csv")
        assert not challenger.decision.promoted
        try:
            yield Shadowed(settings, champion, challenger.registered.version, env)
        finally:
            stop_deployment(settings)


def _assert_group_gone(pid: int) -> None:
    """No live process is left in group ``pid``. Exited members that nobody has reaped yet (a
    container's init may never reap them) are zombies: they hold no port, memory or CPU."""
    from mlops import processes

    try:
        os.waitpid(pid, os.WNOHANG)  # a server this test process started itself
    except ChildProcessError:
        pass
    assert not processes.alive(pid), f"process group {pid} still has live members"


def _cli(shadowed: Shadowed, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(MLOPS), *args], capture_output=True, text=True, cwd=REPO, env=shadowed.env, timeout=300)


def _records(start: int, count: int) -> list[dict]:
    from registered import features

    return features().iloc[start : start + count].to_dict(orient="records")


def _truth(start: int, count: int) -> list:
    from registered import TRAIN_CSV

    from mlops.data import load_table

    return load_table(TRAIN_CSV)["target"].iloc[start : start + count].tolist()


@pytest.mark.slow
def test_shadow__without_a_deployment_is_a_clear_error(shadowed: Shadowed):
    result = _cli(shadowed, "deploy", "--shadow", shadowed.challenger)

    assert result.returncode == 3
    assert "start one with `mlops deploy` first" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.slow
def test_shadow__clients_get_the_champion_the_shadow_logs_the_same_requests(shadowed: Shadowed):
    import mlflow

    from mlops.deployment import deploy, deployment_status, read_events, shadow_predictions_dir
    from mlops.prediction_log import read_prediction_log

    settings = shadowed.settings
    state = deploy(settings)
    started = _cli(shadowed, "deploy", "--shadow", shadowed.challenger)
    assert started.returncode == 0, started.stderr
    assert f"Shadow v{shadowed.challenger} runs beside v{shadowed.champion}" in started.stdout

    sent: dict[str, int] = {}
    with httpx.Client(base_url=state.url, timeout=30.0) as client:
        for i in range(40):  # 1 to 4 records per request, half with the client's own request id
            records, labels = _records(2 * i, 1 + i % 4), _truth(2 * i, 1 + i % 4)
            headers = {"x-request-id": f"client-{i}"} if i % 2 else {}
            answer = client.post("/predict", json={"records": records}, headers=headers)
            assert answer.status_code == 200 and answer.json()["model_version"] == shadowed.champion
            sent[answer.json()["request_id"]] = len(records)
            shadowed.truth.update({(answer.json()["request_id"], k): label for k, label in enumerate(labels)})
    assert all(f"client-{i}" in sent for i in range(1, 40, 2))

    copies = wait_for(lambda: (c := deployment_status(settings).shadow_copies) and c["sent"] == len(sent) and c)
    wait_for(lambda: len(read_prediction_log(shadow_predictions_dir(settings))) == sum(sent.values()), what="shadow log")
    shadow_log = read_prediction_log(shadow_predictions_dir(settings))
    champion_log = read_prediction_log(settings.predictions_dir)
    keys = lambda log: set(zip(log["request_id"], log["record"]))  # noqa: E731
    assert keys(shadow_log) == keys(champion_log) == {(rid, k) for rid, n in sent.items() for k in range(n)}
    assert set(shadow_log["model_version"]) == {shadowed.challenger} and set(champion_log["model_version"]) == {shadowed.champion}
    assert copies["dropped"] == copies["failed"] == copies["refused"] == 0
    # Each record's shadow answer is the challenger's own prediction for that record.
    model = mlflow.sklearn.load_model(f"models:/{settings.model.name}/{shadowed.challenger}")
    features = [name for name in champion_log.columns if name in _records(0, 1)[0]]
    assert model.predict(shadow_log[features]).tolist() == shadow_log["prediction"].tolist()
    assert read_events(settings)[-1] | {"timestamp": None, "ready_seconds": None} == {
        "timestamp": None, "event": "shadow_started", "model_name": settings.model.name, "version": shadowed.challenger,
        "serving": shadowed.champion, "replaced": None, "ready_seconds": None,
    }  # fmt: skip


@pytest.mark.slow
def test_shadow__arrow_requests_are_copied_too(shadowed: Shadowed):
    import pyarrow as pa
    from registered import features

    from mlops.deployment import deployment_status, shadow_predictions_dir
    from mlops.prediction_log import read_prediction_log

    status = deployment_status(shadowed.settings)
    before = status.shadow_copies["sent"]
    table = pa.Table.from_pandas(features().iloc[100:130], preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)

    answer = httpx.post(status.state.url + "/arrow/predict", content=sink.getvalue().to_pybytes(),
                        headers={"content-type": "application/vnd.apache.arrow.stream"}, timeout=30.0)  # fmt: skip

    assert answer.status_code == 200 and answer.headers["x-model-version"] == shadowed.champion
    request_id = answer.headers["x-request-id"]
    folder = shadow_predictions_dir(shadowed.settings)
    wait_for(lambda: (read_prediction_log(folder)["request_id"] == request_id).sum() == 30, what="Arrow copy logged")
    logged = read_prediction_log(folder)
    assert logged.loc[logged["request_id"] == request_id, "record"].tolist() == list(range(30))
    assert deployment_status(shadowed.settings).shadow_copies["sent"] == before + 1


@pytest.mark.slow
def test_shadow__route_skips_and_counts_the_copies_its_check_refuses(shadowed: Shadowed):
    from mlops.deployment import deployment_status, shadow_predictions_dir
    from mlops.prediction_log import read_prediction_log

    shadow = deployment_status(shadowed.settings).state.shadow
    good, bad = _records(0, 2), [{**_records(0, 1)[0], "mean_radius": "large"}]
    batch = {"requests": [
        {"request_id": "direct-good", "body": {"records": good}},
        {"request_id": "direct-bad", "body": {"records": bad}},  # a text value where the contract wants a number
        {"request_id": "no records", "body": {}},
    ]}  # fmt: skip

    answer = httpx.post(shadow.url + "/shadow/predict", json=batch, timeout=30.0)
    garbage = httpx.post(shadow.url + "/shadow/predict", content=b"not json", timeout=30.0)

    assert answer.status_code == 200 and answer.json() == {"scored": 1, "records": 2, "refused": 2}
    assert garbage.status_code == 400
    folder = shadow_predictions_dir(shadowed.settings)
    wait_for(lambda: read_prediction_log(folder)["request_id"].str.startswith("direct").sum() == 2, what="copies logged")
    logged = read_prediction_log(folder)
    direct = logged[logged["request_id"].str.startswith("direct")]
    assert list(zip(direct["request_id"], direct["record"])) == [("direct-good", 0), ("direct-good", 1)]


@pytest.mark.slow
def test_shadow__the_same_version_or_an_unknown_one_is_refused(shadowed: Shadowed):
    from mlops.deployment import deploy_shadow, deployment_status
    from mlops.errors import MlopsError, RegistryError

    before = deployment_status(shadowed.settings).state

    with pytest.raises(MlopsError, match="is the one serving"):
        deploy_shadow(shadowed.settings, shadowed.champion)
    with pytest.raises(RegistryError, match="has no version 99"):
        deploy_shadow(shadowed.settings, "99")
    assert deploy_shadow(shadowed.settings, shadowed.challenger) == before  # the running shadow again: a no-op
    assert deployment_status(shadowed.settings).state == before


@pytest.mark.slow
def test_shadow__monitoring_compares_both_versions_on_the_labeled_rows(shadowed: Shadowed):
    import mlflow
    import pandas as pd
    from rich.console import Console

    from flows.monitoring import monitoring_flow
    from mlops import labels, reporting
    from mlops.contract import load_contract
    from mlops.deployment import shadow_predictions_dir
    from mlops.prediction_log import read_prediction_log

    settings = shadowed.settings
    champion_log = read_prediction_log(settings.predictions_dir)
    shadow_log = read_prediction_log(shadow_predictions_dir(settings)).set_index(["request_id", "record"])
    target = load_contract(settings.data.contract).target_column
    known = list(shadowed.truth.items())[: len(shadowed.truth) // 2]  # half the records get their label
    labeled = pd.DataFrame([(rid, record, label) for (rid, record), label in known], columns=["request_id", "record", "label"])
    added = labels.add_labels(labeled, settings.labels_dir, target, source="test")
    assert added.accepted == len(labeled)

    outcome = monitoring_flow(settings)
    shadow = outcome.shadow

    assert (shadow.shadow_version, shadow.champion_version) == (shadowed.challenger, shadowed.champion)
    assert shadow.compared_rows == len(champion_log) and shadow.labeled_rows == len(labeled)
    paired = champion_log.set_index(["request_id", "record"]).join(shadow_log, rsuffix="_shadow")
    expected = float((paired["prediction"] != paired["prediction_shadow"]).mean())
    assert shadow.disagreement == pytest.approx(expected) and 0 < shadow.disagreement < 1
    on_labeled = paired.loc[list(zip(labeled["request_id"], labeled["record"]))].assign(label=labeled["label"].to_numpy())
    right = lambda column: float((on_labeled[column] == on_labeled["label"]).mean())  # noqa: E731
    assert shadow.champion_quality["accuracy"] == pytest.approx(right("prediction"))
    assert shadow.shadow_quality["accuracy"] == pytest.approx(right("prediction_shadow"))
    run = mlflow.get_run(outcome.mlflow_run_id)
    assert run.data.tags["mlops.shadow.version"] == shadowed.challenger
    assert run.data.metrics["shadow_disagreement"] == pytest.approx(expected)
    assert run.data.metrics["shadow_compared_rows"] == len(champion_log)
    assert {"shadow_accuracy", "champion_accuracy"} <= set(run.data.metrics)
    assert json.loads(outcome.summary_path.read_text())["shadow"]["shadow_version"] == shadowed.challenger
    console = Console(record=True, width=200)
    reporting.print_monitoring(outcome, console)
    shown = f"shadow v{shadowed.challenger} vs champion v{shadowed.champion}: {len(champion_log)} records compared"
    assert shown in console.export_text()


@pytest.mark.slow
def test_shadow__cli_status_shows_the_shadow_and_its_copies(shadowed: Shadowed):
    result = _cli(shadowed, "deploy", "status")

    assert result.returncode == 0, result.stderr
    assert f"v{shadowed.champion} (champion)" in result.stdout
    assert f"shadow v{shadowed.challenger} pid" in result.stdout and ": up; copies sent 41, dropped 0, failed 0" in result.stdout


@pytest.mark.slow
def test_shadow__stopping_it_under_traffic_leaves_the_champion_serving(shadowed: Shadowed):
    from mlops.deployment import deployment_status, read_events

    settings = shadowed.settings
    state = deployment_status(settings).state
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def send_continuously() -> None:
        with httpx.Client(base_url=state.url, timeout=60.0) as client:
            while not stop.is_set():
                try:
                    answer = client.post("/predict", json={"records": _records(0, 1)})
                    outcomes[f"{answer.status_code} v{answer.json()['model_version']}"] += 1
                except (httpx.HTTPError, KeyError, ValueError) as exc:
                    outcomes[f"failed {type(exc).__name__}"] += 1

    client = threading.Thread(target=send_continuously)
    client.start()
    try:
        time.sleep(0.5)
        stopped = _cli(shadowed, "deploy", "--shadow", "off")
        time.sleep(0.5)
    finally:
        stop.set()
        client.join()

    print(f"requests while the shadow stopped: {dict(outcomes)}")
    assert stopped.returncode == 0 and f"Stopped shadow v{shadowed.challenger}" in stopped.stdout, stopped.stderr
    assert set(outcomes) == {f"200 v{shadowed.champion}"}
    status = deployment_status(settings)
    assert status.healthy and status.state.shadow is None and status.shadow_copies is None
    _assert_group_gone(state.shadow.pid)
    assert read_events(settings)[-1]["event"] == "shadow_stopped"


@pytest.mark.slow
def test_shadow__stop_deployment_leaves_no_process_behind(shadowed: Shadowed):
    import psutil

    from mlops.deployment import deploy_shadow, deployment_status, stop_deployment

    settings = shadowed.settings
    state = deploy_shadow(settings, shadowed.challenger)
    assert deployment_status(settings).shadow_alive
    started = [psutil.Process(pid) for pid in (state.proxy_pid, state.backend.pid, state.shadow.pid)]
    # BentoML's workers run in sessions of their own: the whole trees, not just the groups, must go.
    family = started + [child for process in started for child in process.children(recursive=True)]
    assert len(family) > len(started)

    stop_deployment(settings)

    left = [process for process in family if process.is_running() and process.status() != psutil.STATUS_ZOMBIE]
    assert left == []
    for pid in (state.proxy_pid, state.backend.pid, state.shadow.pid):
        _assert_group_gone(pid)
    assert deployment_status(settings).state is None
