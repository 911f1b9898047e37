"""The serving stage against real tools: an MLflow registry in SQLite, a BentoML model
store and a ``bentoml serve`` process on a free 127.0.0.1 port.

The registry and the server are shared by the module (a start takes ~10 s), so the
state folder comes from ``tmp_path_factory`` rather than the per-test ``settings``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops.config import Settings, load_settings
from mlops.environment import tool_environment
from mlops.errors import RegistryError, ServingError
from mlops.prediction_log import read_prediction_log
from mlops.serving import ServerProcess, free_port, import_model, resolve_alias, start_server

TRAIN_CSV = Path(__file__).resolve().parents[1] / "data" / "train.csv"


@dataclass(frozen=True)
class Registry:
    settings: Settings
    version: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A champion registered the way training registers it, in a store of our own."""
    settings = load_settings(state_dir=tmp_path_factory.mktemp("serving") / "state")
    with tool_environment(settings):
        yield Registry(settings, _register_champion(settings))


def _register_champion(settings: Settings) -> str:
    import mlflow
    import skops.io
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features, target = _features(), _target()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features, target)
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))
    location = (settings.state_dir / "mlartifacts").as_uri()
    experiment_id = mlflow.create_experiment(settings.model.experiment, artifact_location=location)
    with mlflow.start_run(experiment_id=experiment_id):
        info = mlflow.sklearn.log_model(
            pipeline,
            name="model",
            signature=infer_signature(features, pipeline.predict(features)),
            input_example=features.head(2),
            registered_model_name=settings.model.name,
            serialization_format="skops",
            skops_trusted_types=trusted,
            pip_requirements=["scikit-learn"],
        )
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(settings.model.name, "champion", version)
    return version


def _features():
    import pandas as pd

    return pd.read_csv(TRAIN_CSV).drop(columns="target")


def _target():
    import pandas as pd

    return pd.read_csv(TRAIN_CSV)["target"]


def _records(start: int, count: int) -> list[dict[str, float]]:
    return _features().iloc[start : start + count].to_dict(orient="records")


@pytest.fixture(scope="module")
def server(registry: Registry) -> Iterator[ServerProcess]:
    tag = import_model(registry.settings.model.name, registry.version)
    with start_server(registry.settings, tag, port=free_port()) as running:
        yield running


def _post(server: ServerProcess, payload: object):
    import httpx

    return httpx.post(f"{server.url}/predict", json=payload, timeout=30.0)


def _is_listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_import_serving__loads_no_tool():
    code = "import sys, mlops.serving; print(sorted({'bentoml', 'mlflow', 'httpx'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_resolve_alias__returns_the_champion_version(registry: Registry):
    assert resolve_alias(registry.settings.model.name, "champion") == registry.version


def test_resolve_alias__unknown_alias_is_a_registry_error(registry: Registry):
    with pytest.raises(RegistryError, match="has alias 'staging'.*mlops train"):
        resolve_alias(registry.settings.model.name, "staging")


def test_resolve_alias__unknown_model_is_a_registry_error(registry: Registry):
    with pytest.raises(RegistryError, match="'no-such-model' is not registered"):
        resolve_alias("no-such-model", "champion")


def test_import_model__is_idempotent_and_labelled(registry: Registry):
    import bentoml

    name = registry.settings.model.name

    first = import_model(name, registry.version)
    second = import_model(name, registry.version)

    labels = bentoml.models.get(first).info.labels
    assert first == second == f"{name}:v{registry.version}-{labels['mlflow_run_id'][:8]}"
    assert [str(model.tag) for model in bentoml.models.list(name)].count(first) == 1
    assert labels["mlflow_model"] == name
    assert labels["mlflow_version"] == registry.version


def test_import_model__unknown_version_is_a_registry_error(registry: Registry):
    with pytest.raises(RegistryError, match="has no version 99"):
        import_model(registry.settings.model.name, "99")


@pytest.mark.slow
def test_predict__answers_predictions_and_probabilities(server: ServerProcess, registry: Registry):
    response = _post(server, {"records": _records(0, 5)})

    assert response.status_code == 200
    body = response.json()
    assert body["model_name"] == registry.settings.model.name
    assert body["model_version"] == registry.version
    assert len(body["predictions"]) == len(body["probabilities"]) == 5
    assert set(body["predictions"]) <= {0, 1}
    assert all(len(pair) == 2 and sum(pair) == pytest.approx(1.0) for pair in body["probabilities"])


@pytest.mark.slow
def test_predict__missing_field_is_a_client_error(server: ServerProcess):
    records = _records(0, 2)
    del records[1]["mean_radius"]

    response = _post(server, {"records": records})

    assert 400 <= response.status_code < 500
    assert "mean_radius" in response.text
    assert _post(server, {"records": _records(0, 1)}).status_code == 200


@pytest.mark.slow
def test_predict__logs_inputs_and_version(server: ServerProcess, registry: Registry):
    records = _records(100, 3)
    sent = {record["mean_radius"] for record in records}

    assert _post(server, {"records": records}).status_code == 200

    logged = _wait_for_log(registry.settings, lambda frame: sent <= set(frame.get("mean_radius", [])))
    rows = logged[logged["mean_radius"].isin(sent)]
    assert len(rows) == 3
    assert set(rows["model_version"].astype(str)) == {registry.version}
    assert set(rows["prediction"]) <= {0, 1}


def _wait_for_log(settings: Settings, done, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        frame = read_prediction_log(settings.predictions_dir)
        if done(frame) or time.monotonic() > deadline:
            return frame
        time.sleep(0.2)


@pytest.mark.slow
def test_stop__leaves_nothing_listening(registry: Registry):
    tag = import_model(registry.settings.model.name, registry.version)
    server = start_server(registry.settings, tag, port=free_port())
    assert _is_listening(server.port)

    server.stop()

    assert not _is_listening(server.port)
    assert not _group_alive(server.process.pid)


@pytest.mark.slow
def test_start_server__unknown_model_fails_fast_with_the_log(registry: Registry):
    started = time.monotonic()

    with pytest.raises(ServingError, match="(?s)failed to start.*no-such-model:v1"):
        start_server(registry.settings, "no-such-model:v1", port=free_port())

    assert time.monotonic() - started < registry.settings.serving.startup_timeout_seconds / 2


@pytest.fixture(scope="module")
def guarded(registry: Registry) -> Iterator[ServerProcess]:
    """A server with an API key and a 4 KiB request limit."""
    serving = registry.settings.serving.model_copy(update={"api_key_env": "MLOPS_TEST_KEY", "max_request_bytes": 4096})
    settings = registry.settings.model_copy(update={"serving": serving})
    tag = import_model(settings.model.name, registry.version)
    os.environ["MLOPS_TEST_KEY"] = "s3cret"
    try:
        server = start_server(settings, tag, port=free_port())
    finally:
        del os.environ["MLOPS_TEST_KEY"]
    with server:
        yield server


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: r.update(mean_radius="big"), "records[1].mean_radius"),
        (lambda r: r.pop("worst_area"), "records[1].worst_area"),
        (lambda r: r.update(mean_texture=None), "records[1].mean_texture"),
    ],
    ids=["string", "missing", "null"],
)
def test_predict__bad_record_is_422_naming_the_field(server: ServerProcess, change, field):
    records = _records(0, 2)
    change(records[1])

    response = _post(server, {"records": records})

    assert response.status_code == 422
    assert field in response.text
    assert _post(server, {"records": _records(0, 1)}).status_code == 200


@pytest.mark.slow
def test_predict__value_outside_the_contract_range_is_422_naming_the_field(server: ServerProcess):
    records = _records(0, 1)
    records[0]["mean_area"] = 1e6  # the contract allows 0 to ~2737

    response = _post(server, {"records": records})

    assert response.status_code == 422
    assert "mean_area" in response.text and "less than or equal" in response.text
    assert _post(server, {"records": _records(0, 1)}).status_code == 200


@pytest.mark.slow
def test_predict_batched__answers_one_prediction_per_record(server: ServerProcess, registry: Registry):
    import httpx

    response = httpx.post(f"{server.url}/predict_batched", json={"records": _records(5, 3)}, timeout=30.0)

    assert response.status_code == 200
    body = response.json()
    assert len(body) == 3
    assert {item["model_version"] for item in body} == {registry.version}
    assert all(item["prediction"] in (0, 1) and len(item["probabilities"]) == 2 for item in body)


@pytest.mark.slow
def test_predict_batched__concurrent_clients_all_answered(server: ServerProcess):
    import asyncio

    import httpx

    async def send_all() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60.0) as client:
            calls = [client.post("/predict_batched", json={"records": _records(i, 1)}) for i in range(40)]
            return [response.status_code for response in await asyncio.gather(*calls)]

    assert asyncio.run(send_all()) == [200] * 40


@pytest.mark.slow
def test_predict_batched__bad_record_is_422(server: ServerProcess):
    import httpx

    response = httpx.post(f"{server.url}/predict_batched", json={"records": [{"mean_radius": 1.0}]}, timeout=30.0)

    assert response.status_code == 422
    assert "mean_texture" in response.text


@pytest.mark.slow
def test_metrics_and_openapi__answer(server: ServerProcess):
    import httpx

    _post(server, {"records": _records(0, 1)})
    metrics = httpx.get(f"{server.url}/metrics", timeout=10.0)
    openapi = httpx.get(f"{server.url}/docs.json", timeout=10.0)

    assert metrics.status_code == 200
    assert "bentoml_service_request_total" in metrics.text
    assert openapi.status_code == 200
    assert {"/predict", "/predict_batched", "/readyz", "/livez"} <= set(openapi.json()["paths"])


@pytest.mark.slow
def test_api_key__required_on_predict_only(guarded: ServerProcess):
    import httpx

    payload = {"records": _records(0, 1)}
    without = httpx.post(f"{guarded.url}/predict", json=payload, timeout=30.0)
    wrong = httpx.post(f"{guarded.url}/predict", json=payload, headers={"X-API-Key": "nope"}, timeout=30.0)
    bearer = httpx.post(f"{guarded.url}/predict", json=payload, headers={"Authorization": "Bearer s3cret"}, timeout=30.0)

    assert (without.status_code, wrong.status_code, bearer.status_code) == (401, 401, 200)
    assert httpx.post(f"{guarded.url}/arrow/predict", content=b"", timeout=30.0).status_code == 401
    assert httpx.get(f"{guarded.url}/readyz", timeout=10.0).status_code == 200
    assert httpx.get(f"{guarded.url}/livez", timeout=10.0).status_code == 200
    assert httpx.get(f"{guarded.url}/metrics", timeout=10.0).status_code == 200
    assert httpx.get(f"{guarded.url}/docs.json", timeout=10.0).status_code == 200


@pytest.mark.slow
def test_request_size__over_the_limit_is_413_then_serving_goes_on(guarded: ServerProcess):
    import httpx

    headers = {"X-API-Key": "s3cret"}
    big = {"records": _records(0, 30)}

    sized = httpx.post(f"{guarded.url}/predict", json=big, headers=headers, timeout=30.0)
    chunked = httpx.post(
        f"{guarded.url}/predict",
        content=iter([b'{"records": ', json.dumps(big["records"]).encode(), b"}"]),
        headers={**headers, "content-type": "application/json"},
        timeout=30.0,
    )

    assert (sized.status_code, chunked.status_code) == (413, 413)
    assert httpx.post(f"{guarded.url}/predict", json={"records": _records(0, 1)}, headers=headers).status_code == 200


def _arrow_body(frame) -> bytes:
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _post_arrow(server: ServerProcess, body: bytes):
    import httpx

    headers = {"content-type": "application/vnd.apache.arrow.stream"}
    return httpx.post(f"{server.url}/arrow/predict", content=body, headers=headers, timeout=60.0)


@pytest.mark.slow
def test_arrow_predict__scores_a_columnar_batch(server: ServerProcess, registry: Registry):
    import pyarrow as pa

    frame = _features().iloc[:300]

    response = _post_arrow(server, _arrow_body(frame))

    assert response.status_code == 200, response.text
    assert response.headers["x-model-version"] == registry.version
    result = pa.ipc.open_stream(response.content).read_all().to_pandas()
    assert list(result.columns) == ["prediction", "probability_0", "probability_1"]
    assert len(result) == 300
    assert ((result["probability_0"] + result["probability_1"]) - 1.0).abs().max() < 1e-9
    json_answer = _post(server, {"records": _records(0, 300)}).json()
    assert result["prediction"].tolist() == json_answer["predictions"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "named"),
    [
        (lambda f: _arrow_body(f.drop(columns="mean_radius")), "mean_radius"),
        (lambda f: _arrow_body(f.assign(mean_texture="x")), "mean_texture"),
        (lambda f: _arrow_body(f.assign(worst_area=float("nan"))), "worst_area"),
        (lambda f: _arrow_body(f.assign(mean_area=1e6)), "mean_area"),
        (lambda f: b"not arrow", "Arrow IPC stream"),
    ],
    ids=["missing", "string", "nan", "out-of-range", "garbage"],
)
def test_arrow_predict__bad_body_is_422_naming_the_column(server: ServerProcess, body, named):
    response = _post_arrow(server, body(_features().iloc[:5]))

    assert response.status_code == 422
    assert named in response.json()["error"]


def _edge_records() -> list[list[dict]]:
    """Requests of two records, the second changed in every way a client can get it wrong."""
    base = _records(0, 2)
    changes = [
        {}, {"mean_radius": 14}, {"mean_radius": True}, {"mean_radius": "14.1"}, {"mean_radius": None},
        {"mean_radius": float("nan")}, {"mean_radius": float("inf")}, {"mean_area": 1e6}, {"mean_area": -1.0},
        {"mean_radius": 1e3}, {"mean_radius": 0.0}, {"unknown": "extra"}, {"mean_radius": [1.0]},
    ]  # fmt: skip
    requests = [[base[0], {**base[1], **change}] for change in changes]
    requests.append([base[0], {key: value for key, value in base[1].items() if key != "worst_area"}])
    return requests


def test_frame_check__accepts_only_what_the_schema_accepts(registry: Registry, tmp_path: Path):
    import mlflow
    from pydantic import TypeAdapter, ValidationError

    from mlops.contract import load_contract, write_contract
    from mlops.serving import frame_check, request_schema, request_validator

    model_dir = mlflow.artifacts.download_artifacts(f"models:/{registry.settings.model.name}/{registry.version}", dst_path=str(tmp_path))
    contract = load_contract(registry.settings.data.contract)
    warn = [c.model_copy(update={"severity": {"range": "warn"}}) if c.name == "mean_radius" else c for c in contract.columns]
    contract_path = write_contract(contract.model_copy(update={"columns": warn}), tmp_path / "contract.yaml")
    check = frame_check(model_dir, contract_path)
    schema = TypeAdapter(list[request_schema(model_dir, contract_path)])
    validator = request_validator(contract_path, list(check.features))
    accepted = 0
    for records in _edge_records():
        frame = check.accept(records)
        try:
            valid = [row.model_dump() for row in schema.validate_python(records)]
        except ValidationError:
            assert frame is None, records[1]
            continue
        if frame is not None:
            accepted += 1
            assert frame.to_dict(orient="records") == valid
            counted = {name: n for name, n in check.warnings(frame).items()}
            expected: dict[str, int] = {}
            for row in valid:
                for finding in validator.warnings(row):
                    name = finding.split(":", 1)[0]
                    expected[name] = expected.get(name, 0) + 1
            assert counted == expected
    assert accepted >= 4  # the plain, int, extra-key and warn-range requests take the fast path


def test_frame_check__names_what_is_out_of_range(registry: Registry, tmp_path: Path):
    import mlflow

    from mlops.serving import frame_check

    model_dir = mlflow.artifacts.download_artifacts(f"models:/{registry.settings.model.name}/{registry.version}", dst_path=str(tmp_path))
    check = frame_check(model_dir, registry.settings.data.contract)
    frame = _features().iloc[:3].assign(mean_area=[1.0, 1e6, 2e6])

    assert check.accept(frame.to_dict(orient="records")) is None
    [problem] = check.out_of_range(frame)
    assert problem.startswith("mean_area: 2 value(s) outside")
