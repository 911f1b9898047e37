"""The serving stage against real tools: an MLflow registry in SQLite, a BentoML model
store and ``bentoml serve`` processes on free 127.0.0.1 ports.

The registries and servers are shared by the module (a start takes ~10 s), so the
state folders come from ``tmp_path_factory`` rather than the per-test ``settings``:
the bundled breast-cancer classifier (0/1 labels, numbers only), a text-label
classifier with a text category and nulls (``flowers``) and a regressor with text,
integer and bool features (``prices``), both built from ``tests/datasets.py``.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_request_check import as_json_records, fitted, model_arguments, save_model, typed_features

from mlops.config import Settings, load_settings
from mlops.environment import tool_environment
from mlops.errors import RegistryError, ServingError
from mlops.prediction_log import read_prediction_log
from mlops.serving import ServerProcess, free_port, import_model, load_served_model, resolve_alias, start_server, startup_error

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
    assert set(body["predictions"]) <= {0, 1} and body["classes"] == [0, 1]
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

    with pytest.raises(ServingError, match="failed to start: NotFound: Model 'no-such-model:v1' is not found") as failed:
        start_server(registry.settings, "no-such-model:v1", port=free_port())

    assert time.monotonic() - started < registry.settings.serving.startup_timeout_seconds / 2
    assert "BentoML store?" not in str(failed.value) and "Traceback" not in str(failed.value)


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
def test_predict__value_outside_the_contract_range_is_422_naming_the_field(server: ServerProcess, registry: Registry):
    from mlops.prediction_log import read_refusals

    records = _records(0, 1)
    records[0]["mean_area"] = 1e6  # the contract allows 0 to ~2737
    before = len(read_refusals(registry.settings.predictions_dir))

    response = _post(server, {"records": records})

    assert response.status_code == 422
    assert response.json()["error"].startswith("1 feature(s) refused: records[0].mean_area: 1000000.0 is outside [")
    assert _post(server, {"records": _records(0, 1)}).status_code == 200
    refusals = read_refusals(registry.settings.predictions_dir)  # what monitoring counts beside the logged window
    assert len(refusals) == before + 1
    assert refusals[-1]["path"] == "/predict" and refusals[-1]["columns"] == ["mean_area"]


@pytest.mark.slow
def test_predict_batched__answers_one_prediction_per_record(server: ServerProcess, registry: Registry):
    import httpx

    response = httpx.post(f"{server.url}/predict_batched", json={"records": _records(5, 3)}, timeout=30.0)

    assert response.status_code == 200
    body = response.json()
    assert len(body) == 3
    assert {item["model_version"] for item in body} == {registry.version}
    assert all(item["prediction"] in (0, 1) and len(item["probabilities"]) == 2 for item in body)
    assert all(item["classes"] == [0, 1] for item in body)


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

    response = httpx.post(f"{server.url}/predict_batched", json={"records": [{"mean_radius": 10.0}]}, timeout=30.0)

    assert response.status_code == 422
    assert "records[0].mean_texture: missing or null" in response.json()["error"]


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
def test_arrow_predict__bad_body_is_4xx_naming_the_column(server: ServerProcess, body, named):
    response = _post_arrow(server, body(_features().iloc[:5]))

    assert response.status_code == (400 if named == "Arrow IPC stream" else 422)
    assert named in response.json()["error"]


def test_api_key__leaves_the_docs_page_open(guarded: ServerProcess):
    import httpx

    page = httpx.get(f"{guarded.url}/docs", timeout=10.0)

    assert page.status_code == 200 and "swagger" in page.text.lower()


# --- Any tabular dataset: a text-label classifier and a regressor ----------------------------


@dataclass(frozen=True)
class Served:
    """One dataset's model, registered and served, with what the test needs to check the answers."""

    settings: Settings
    version: str
    pipeline: object
    features: object  # the training features, typed as training feeds them
    contract: object
    server: ServerProcess


def _serve_dataset(name: str, folder: Path, **config: dict) -> Iterator[Served]:
    import mlflow
    from mlflow import MlflowClient

    from mlops.contract import write_contract

    pipeline, features, _, contract = fitted(name)
    contract_path = write_contract(contract, folder / f"{name}.yaml")
    settings = load_settings(
        state_dir=folder / "state", data={"training": str(TRAIN_CSV), "contract": str(contract_path)},
        model={"name": f"{name}-model"}, **config,
    )  # fmt: skip
    with tool_environment(settings):
        location = (settings.state_dir / "mlartifacts").as_uri()
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
        with mlflow.start_run(experiment_id=experiment_id):
            info = mlflow.sklearn.log_model(
                pipeline, name="model", registered_model_name=settings.model.name, **model_arguments(pipeline, features)
            )
        version = str(info.registered_model_version)
        MlflowClient().set_registered_model_alias(settings.model.name, "champion", version)
        with start_server(settings, import_model(settings.model.name, version), port=free_port()) as server:
            yield Served(settings, version, pipeline, features, contract, server)


@pytest.fixture(scope="module")
def flowers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve_dataset("flowers", tmp_path_factory.mktemp("flowers"))


@pytest.fixture(scope="module")
def prices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve_dataset("prices", tmp_path_factory.mktemp("prices"), logs={"format": "json"})


def _flowers_records(served: Served) -> list[dict]:
    """Training rows as JSON (nulls included), one with a missing key and one with an unseen category."""
    records = as_json_records(served.features.iloc[:8])
    records[1].pop("garden")
    records[2]["garden"] = "west"
    records[3]["petal width (cm)"] = None
    return records


@pytest.mark.slow
def test_flowers__answers_the_users_labels_with_named_classes(flowers: Served):
    import pandas as pd

    records = _flowers_records(flowers)

    response = _post(flowers.server, {"records": records})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["classes"] == ["setosa", "versicolor", "virginica"]
    expected = flowers.pipeline.predict(typed_features(pd.DataFrame(records), flowers.contract))
    assert body["predictions"] == list(expected)
    assert all(isinstance(label, str) for label in body["predictions"])
    assert all(len(row) == 3 and sum(row) == pytest.approx(1.0) for row in body["probabilities"])


@pytest.mark.slow
def test_flowers__unseen_category_is_scored_and_counted_in_metrics(flowers: Served):
    import httpx

    assert _post(flowers.server, {"records": _flowers_records(flowers)}).status_code == 200

    metrics = httpx.get(f"{flowers.server.url}/metrics", timeout=10.0).text
    assert 'mlops_contract_warnings_total{column="garden"}' in metrics


@pytest.mark.slow
@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"records": []}, 422, "'records' is empty"),
        ({"records": {"garden": "north"}}, 400, "'records' is an object, not a list"),
        ({"records": ["north"]}, 400, "records[0] is a string"),
        ({"rows": []}, 400, "'records' is missing"),
        (b'{"records": [', 400, "Invalid JSON"),
        ({"records": [{"garden": "north"}]}, 422, "records[0].sepal length (cm): missing or null"),
        ({"records": [{"sepal length (cm)": 10**400}]}, 422, "is too large for a number"),
    ],
    ids=["empty", "object", "not-an-object", "no-records", "not-json", "missing", "huge-int"],
)
def test_flowers__a_bad_request_is_a_4xx_with_a_message_and_serving_goes_on(flowers: Served, payload, status, message):
    import httpx

    if isinstance(payload, bytes):
        response = httpx.post(f"{flowers.server.url}/predict", content=payload, headers={"content-type": "application/json"})
    else:
        response = _post(flowers.server, payload)

    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert _post(flowers.server, {"records": _flowers_records(flowers)}).status_code == 200


@pytest.mark.slow
def test_prices__with_json_logs_the_server_log_lines_name_the_version_and_the_request(prices: Served):
    import httpx

    httpx.post(f"{prices.server.url}/predict", json={"records": [{}]}, headers={"x-request-id": "client-42"}, timeout=30)
    time.sleep(0.5)

    lines = [json.loads(line) for line in prices.server.log_path.read_text(encoding="utf-8").splitlines() if line.startswith("{")]
    refused = [line for line in lines if "POST /predict refused 422" in line["message"]]
    assert len(refused) == 1 and refused[0]["request_id"] == "client-42" and refused[0]["level"] == "info"
    assert {line.get("model_version") for line in lines} == {prices.version}, "every line names the version served"


@pytest.mark.slow
def test_flowers__client_errors_are_logged_in_one_info_line(flowers: Served):
    _post(flowers.server, {"records": [{"garden": 5}]})
    time.sleep(0.5)

    log = flowers.server.log_path.read_text(encoding="utf-8")

    refused = [line for line in log.splitlines() if "POST /predict refused 422" in line and "records[0].garden: 5" in line]
    assert len(refused) == 1 and "[INFO]" in refused[0]
    assert "Traceback" not in log and "[ERROR]" not in log


@pytest.mark.slow
def test_flowers__predict_batched_answers_labels_per_record(flowers: Served):
    import httpx

    records = _flowers_records(flowers)[:3]

    response = httpx.post(f"{flowers.server.url}/predict_batched", json={"records": records}, timeout=30.0)

    assert response.status_code == 200, response.text
    body = response.json()
    single = _post(flowers.server, {"records": records}).json()
    assert [item["prediction"] for item in body] == single["predictions"]
    assert all(item["classes"] == single["classes"] and len(item["probabilities"]) == 3 for item in body)


@pytest.mark.slow
def test_flowers__arrow_answers_labels_and_a_probability_column_per_class(flowers: Served):
    import pyarrow as pa

    frame = flowers.features.iloc[:40]

    response = _post_arrow(flowers.server, _arrow_body(frame))

    assert response.status_code == 200, response.text
    table = pa.ipc.open_stream(response.content).read_all()
    assert table.column_names == ["prediction", "probability_setosa", "probability_versicolor", "probability_virginica"]
    assert pa.types.is_string(table.schema.field("prediction").type)
    json_answer = _post(flowers.server, {"records": as_json_records(frame)}).json()
    assert table.column("prediction").to_pylist() == json_answer["predictions"]


@pytest.mark.slow
def test_flowers__arrow_refuses_a_text_column_of_numbers(flowers: Served):
    response = _post_arrow(flowers.server, _arrow_body(flowers.features.iloc[:5].assign(garden=1)))

    assert response.status_code == 422
    assert "rows.garden: the column holds int64, not text" in response.json()["error"]


@pytest.mark.slow
def test_flowers__logs_the_labels_as_they_are(flowers: Served):
    records = _flowers_records(flowers)
    answer = _post(flowers.server, {"records": records}).json()

    logged = _wait_for_log(flowers.settings, lambda frame: answer["request_id"] in set(frame.get("request_id", [])))

    rows = logged[logged["request_id"] == answer["request_id"]].sort_values("record")
    assert rows["prediction"].tolist() == answer["predictions"]
    assert rows["garden"].iloc[2] == "west" and rows["garden"].isna().iloc[1]


@pytest.mark.slow
def test_flowers__openapi_lists_every_feature_and_the_client_errors(flowers: Served):
    import httpx

    document = httpx.get(f"{flowers.server.url}/docs.json", timeout=10.0).json()

    post = document["paths"]["/predict"]["post"]
    records = post["requestBody"]["content"]["application/json"]["schema"]["properties"]["records"]
    properties = records["items"]["properties"]
    assert list(properties) == [column.name for column in flowers.contract.features]
    assert properties["sepal length (cm)"]["type"] == "number" and "minimum" in properties["sepal length (cm)"]
    assert properties["garden"]["x-categories"] == ["east", "north", "south"] and properties["garden"]["nullable"]
    assert {"400", "401", "413", "422"} <= set(post["responses"])
    example = post["requestBody"]["content"]["application/json"]["example"]
    assert _post(flowers.server, example).status_code == 200  # Swagger's "Try it out" works
    assert "/arrow/predict" in document["paths"] and "/predict_batched" in document["paths"]


@pytest.mark.slow
def test_prices__a_regressor_answers_numbers_without_probabilities(prices: Served):
    import pandas as pd

    records = as_json_records(prices.features.iloc[:6])

    response = _post(prices.server, {"records": records})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["probabilities"] is None and body["classes"] is None
    expected = prices.pipeline.predict(typed_features(pd.DataFrame(records), prices.contract))
    assert body["predictions"] == pytest.approx(list(expected))


@pytest.mark.slow
def test_prices__predict_batched_and_arrow_answer_numbers(prices: Served):
    import httpx
    import pyarrow as pa

    frame = prices.features.iloc[:6]

    batched = httpx.post(f"{prices.server.url}/predict_batched", json={"records": as_json_records(frame)}, timeout=30.0)
    arrow = _post_arrow(prices.server, _arrow_body(frame))

    assert batched.status_code == 200 and arrow.status_code == 200
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column_names == ["prediction"] and pa.types.is_floating(table.schema.field("prediction").type)
    assert [item["prediction"] for item in batched.json()] == pytest.approx(table.column("prediction").to_pylist())
    assert all(item["probabilities"] is None for item in batched.json())


@pytest.mark.slow
def test_prices__a_text_value_for_an_integer_is_422_naming_it(prices: Served):
    record = as_json_records(prices.features.iloc[:1])[0] | {"age": "forty"}

    response = _post(prices.server, {"records": [record]})

    assert response.status_code == 422
    assert response.json()["error"] == "1 feature(s) refused: records[0].age: 'forty' is not an integer"


@pytest.mark.slow
def test_start_server__a_model_that_cannot_be_served_is_refused_with_the_reason(prices: Served, tmp_path: Path):
    from mlops.contract import write_contract

    wrong = write_contract(prices.contract.model_copy(update={"task": "classification"}), tmp_path / "wrong.yaml")
    data = prices.settings.data.model_copy(update={"contract": wrong})
    settings = prices.settings.model_copy(update={"data": data})
    tag = import_model(settings.model.name, prices.version)

    with pytest.raises(ServingError, match="failed to start: The data contract says classification, but the model"):
        start_server(settings, tag, port=free_port())


# --- Refused at start-up, without a server ---------------------------------------------------


def test_load_served_model__a_classifier_without_predict_proba_is_refused(tmp_path: Path):
    from sklearn.svm import SVC
    from test_request_check import fit_pipeline

    _, features, _, contract = fitted("churn")
    target = fitted_target("churn")
    pipeline = fit_pipeline(features, target, contract)
    pipeline.steps[-1] = ("model", SVC(probability=False).fit(pipeline[:-1].transform(features), target))
    model_dir = save_model(pipeline, features, tmp_path / "model")

    with pytest.raises(ServingError, match=r"The classifier \(Pipeline\) has no predict_proba"):
        load_served_model(model_dir)


def test_load_served_model__a_regressor_has_no_classes(tmp_path: Path):
    pipeline, features, _, _ = fitted("prices")

    served = load_served_model(save_model(pipeline, features, tmp_path / "model"))

    assert served.task == "regression" and served.classes is None


def test_load_served_model__a_model_without_a_signature_is_refused(tmp_path: Path):
    import mlflow.sklearn

    pipeline, _, _, _ = fitted("prices")
    mlflow.sklearn.save_model(pipeline, str(tmp_path / "model"), serialization_format="cloudpickle")

    with pytest.raises(ServingError, match="has no signature"):
        load_served_model(tmp_path / "model")


def test_startup_error__is_the_last_exception_before_uvicorn_gave_up():
    log = "\n".join([
        "2026-12-01T09:56:14+0000 [ERROR] [entry_service:Predictor:1] Initializing service error",
        "Traceback (most recent call last):",
        '  File "models/service.py", line 113, in __init__',
        "mlops.errors.ServingError: The model at /m has no signature, so its inputs are unknown.",
        "2026-12-01T09:56:14+0000 [ERROR] [entry_service:Predictor:1] Application startup failed. Exiting.",
        "bentoml.exceptions.NotFound: something later",
    ])  # fmt: skip

    assert startup_error(log) == "The model at /m has no signature, so its inputs are unknown."
    assert startup_error("KeyError: 'x'\nApplication startup failed") == "KeyError: 'x'"
    assert startup_error("nothing useful") is None


def fitted_target(name: str):
    from datasets import build

    train, _, spec = build(name)
    return train[spec.target]
