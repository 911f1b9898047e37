"""``POST /labels`` on a real server, and the index of logged request ids it checks labels against.

The server tests share one module server (a start takes ~10 s): a real ``training_flow``
on the ``flowers`` table of ``tests/datasets.py`` (three text classes, nulls, a text
category), served by ``bentoml serve`` on 127.0.0.1 with an API key, its label store and
prediction log in a state folder of its own. The :class:`RequestIndex` tests need no server.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from datasets import write

from mlops.config import Settings, load_settings
from mlops.contract import draft_contract, write_contract
from mlops.data import load_table
from mlops.labels import label_status, read_labels
from mlops.prediction_log import BULK_ROWS, PredictionLogWriter, RequestIndex, read_prediction_log
from mlops.serving import ServerProcess

KEY = "labels-s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}
CLASSES = ["setosa", "versicolor", "virginica"]


# --- RequestIndex: no server -----------------------------------------------------------------


def _log(folder: Path, request_id: str, rows: int = 1) -> None:
    writer = PredictionLogWriter(folder)
    writer.log(request_id=request_id, model_name="m", model_version="1",
               inputs=[{"x": float(i)} for i in range(rows)], predictions=[1] * rows)
    writer.close()


def test_request_index__reads_only_the_lines_appended_since_the_last_refresh(tmp_path):
    # Given an index that has read two requests
    _log(tmp_path, "first")
    _log(tmp_path, "second", rows=3)
    index = RequestIndex(tmp_path)
    assert index.refresh() == 2
    assert "first" in index and "second" in index and len(index) == 2
    # When a line already read is changed in place and a new request is appended
    (path,) = tmp_path.glob("*.jsonl")
    path.write_bytes(path.read_bytes().replace(b'"first"', b'"FIRST"'))
    _log(tmp_path, "third")
    # Then only the appended line is read: the changed one is not read again
    assert index.refresh() == 1
    assert "third" in index and "FIRST" not in index
    assert index.refresh() == 0


def test_request_index__a_line_being_written_is_read_once_complete(tmp_path):
    path = tmp_path / "predictions-20260101.jsonl"
    line = json.dumps({"timestamp": "2026-01-01T00:00:00+00:00", "request_id": "late", "record": 0})
    path.write_text(line[:20])
    index = RequestIndex(tmp_path)

    assert index.refresh() == 0 and "late" not in index

    path.write_text(line + "\n")
    assert index.refresh() == 1 and "late" in index


def test_request_index__ids_with_escapes_and_foreign_lines_are_read(tmp_path):
    _log(tmp_path, 'quote"d\\id')
    (tmp_path / "predictions-20260102.jsonl").write_text('{"request_id": "other-writer", "record": 0}\nnot json\n')

    index = RequestIndex(tmp_path)

    assert index.refresh() == 2
    assert 'quote"d\\id' in index and "other-writer" in index


def test_request_index__keeps_the_newest_ids_within_its_bound(tmp_path):
    index = RequestIndex(tmp_path, max_ids=3)

    for request_id in ["a", "b", "c", "d", "e"]:
        index.add(request_id)
    index.add("e")  # known already: nothing to forget

    assert [request_id in index for request_id in "abcde"] == [False, False, True, True, True]
    assert (len(index), index.evicted) == (3, 2)


def test_request_index__reads_the_ids_of_new_bulk_files_once(tmp_path, caplog):
    # Given a bulk request (written as Parquet) and a file that is not Parquet at all
    _log(tmp_path, "bulk-1", rows=BULK_ROWS)
    index = RequestIndex(tmp_path)
    assert index.refresh() == 1 and "bulk-1" in index
    # When another bulk file arrives beside a broken one
    time.sleep(1.1)  # bulk files are named by the second
    _log(tmp_path, "bulk-2", rows=BULK_ROWS)
    (tmp_path / "predictions-20260101-000000-broken.parquet").write_bytes(b"not parquet")
    # Then the new file's id is read, the broken one is named in a warning, nothing is read twice
    assert index.refresh() == 1 and "bulk-2" in index
    assert "broken.parquet" in caplog.text
    assert len(list(tmp_path.glob("*.parquet"))) == 3 and index.refresh() == 0


def test_request_index__an_absent_folder_holds_no_ids(tmp_path):
    index = RequestIndex(tmp_path / "none")
    assert index.refresh() == 0 and "x" not in index


# --- POST /labels on a served model ----------------------------------------------------------


@dataclass(frozen=True)
class Served:
    settings: Settings
    server: ServerProcess
    rows: list[dict]  # training rows as a client sends them


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Iterator[Served]:
    """The flowers table trained by the real training flow and served with an API key."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.training import training_flow
    from mlops.environment import tool_environment
    from mlops.serving import free_port, import_model, start_server

    folder = tmp_path_factory.mktemp("labels-endpoint")
    train_path, current_path, spec = write("flowers", folder)
    contract = draft_contract(load_table(train_path), spec.target, "flowers")
    contract_path = write_contract(contract, folder / "flowers.yaml")
    settings = load_settings(
        state_dir=folder / "state",
        data={"training": str(train_path), "current": str(current_path), "contract": str(contract_path),
              "target": spec.target},
    )  # fmt: skip
    settings.state_dir.mkdir(parents=True)
    shutil.copy(mlflow_db_template, settings.state_dir / "mlflow.db")
    features = [column.name for column in contract.features]
    rows = json.loads(load_table(train_path)[features].to_json(orient="records"))
    with tool_environment(settings), prefect_test_harness(server_startup_timeout=120):
        version = training_flow(settings).registered.version
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(settings.serving.api_key_env, KEY)  # read by the server at its start
            server = start_server(settings, import_model(settings.model.name, version), port=free_port())
        with server:
            yield Served(settings, server, rows)


def _post(served: Served, path: str, body: object, headers: dict[str, str] = AUTH) -> httpx.Response:
    if isinstance(body, bytes):
        return httpx.post(f"{served.server.url}{path}", content=body,
                          headers={**headers, "content-type": "application/json"}, timeout=30.0)
    return httpx.post(f"{served.server.url}{path}", json=body, headers=headers, timeout=30.0)


def _predict(served: Served, rows: int) -> str:
    response = _post(served, "/predict", {"records": served.rows[:rows]})
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def _stored(served: Served, request_id: str) -> dict[int, object]:
    labels, _ = read_labels(served.settings.labels_dir)
    mine = labels[labels["request_id"] == request_id]
    return dict(zip(mine["record"], mine["label"]))


def _labeled(served: Served) -> tuple[int, int]:
    table, _ = label_status(served.settings.labels_dir, served.settings.predictions_dir)
    return int(table["predictions"].sum()), int(table["labeled"].sum())


def _logged(served: Served, request_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while request_id not in set(read_prediction_log(served.settings.predictions_dir).get("request_id", [])):
        assert time.monotonic() < deadline, f"{request_id} was never logged"
        time.sleep(0.1)


@pytest.mark.slow
def test_labels__sent_right_after_predict_are_stored_and_counted(served: Served):
    # Given a prediction of three records, its labels posted at once (the log is written later, by a thread)
    request_id = _predict(served, 3)
    labels = [
        {"request_id": request_id, "record": 0, "label": "setosa"},
        {"request_id": request_id, "record": 1, "species": "virginica"},  # the target's name works too
        {"request_id": request_id, "record": 2, "label": "versicolor"},
    ]
    # When they are posted
    response = _post(served, "/labels", {"labels": labels})
    # Then all three are stored, the answer counts them and names no path of the server
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 3, "refused": 0, "unknown_request_ids": 0, "duplicates": 0, "problems": []}
    assert _stored(served, request_id) == {0: "setosa", 1: "virginica", 2: "versicolor"}
    stored, _ = read_labels(served.settings.labels_dir)
    assert set(stored.loc[stored["request_id"] == request_id, "source"]) == {"api"}


@pytest.mark.slow
def test_labels__label_status_counts_the_posted_labels_as_labeled(served: Served):
    # Given a logged prediction of four records
    request_id = _predict(served, 4)
    _logged(served, request_id)
    predictions, labeled = _labeled(served)
    # When two of its records get a label
    labels = [{"request_id": request_id, "record": k, "label": "setosa"} for k in (0, 3)]
    response = _post(served, "/labels", {"labels": labels})
    # Then label_status counts those two predictions as labeled, and no more
    assert response.status_code == 200 and response.json()["accepted"] == 2
    assert _labeled(served) == (predictions, labeled + 2)
    table, _ = label_status(served.settings.labels_dir, served.settings.predictions_dir)
    assert table["model_version"].tolist() == ["1"]


@pytest.mark.slow
def test_labels__wrong_type_and_unknown_class_are_counted_and_named_the_rest_stored(served: Served):
    request_id = _predict(served, 5)
    labels = [
        {"request_id": request_id, "record": 0, "label": "setosa"},
        {"request_id": request_id, "record": 1, "label": "tulip"},
        {"request_id": request_id, "record": 2, "label": 7},
        {"request_id": request_id, "record": 3, "label": None},
        {"request_id": request_id, "record": "first", "label": "setosa"},
        {"record": 4, "label": "setosa"},
    ]

    response = _post(served, "/labels", {"labels": labels})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["refused"], body["unknown_request_ids"], body["duplicates"]) == (1, 5, 0, 0)
    problems = "\n".join(body["problems"])
    assert f"3 label(s) left out: not one of {CLASSES} (e.g. 'tulip', 7, empty)" in problems
    assert "record is not a whole number" in problems and "no request_id" in problems
    assert _stored(served, request_id) == {0: "setosa"}


@pytest.mark.slow
def test_labels__unknown_request_ids_are_refused_and_counted(served: Served):
    request_id = _predict(served, 1)
    labels = [
        {"request_id": request_id, "label": "virginica"},  # record 0 by default
        {"request_id": "never-answered", "label": "setosa"},
        {"request_id": "made-up", "record": 2, "label": "setosa"},
    ]

    response = _post(served, "/labels", {"labels": labels})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["refused"], body["unknown_request_ids"]) == (1, 2, 2)
    assert any("matches no logged prediction (e.g. 'never-answered', 'made-up')" in line for line in body["problems"])
    assert _stored(served, request_id) == {0: "virginica"}
    assert _stored(served, "never-answered") == {}


@pytest.mark.slow
def test_labels__none_usable_is_a_422_with_the_counts_and_problems(served: Served):
    labels = [{"request_id": "never-answered", "label": "setosa"}, {"request_id": "made-up", "label": "rose"}]

    response = _post(served, "/labels", {"labels": labels})

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith("No label was stored: 0 accepted, 2 refused, 2 unknown_request_ids, 0 duplicates.")
    assert "matches no logged prediction" in error and "'rose'" in error
    assert "/" + served.settings.labels_dir.name not in error and str(served.settings.state_dir) not in error


@pytest.mark.slow
def test_labels__duplicates_in_one_call_the_later_wins_and_is_counted(served: Served):
    request_id = _predict(served, 2)
    labels = [
        {"request_id": request_id, "record": 0, "label": "setosa"},
        {"request_id": request_id, "record": 1, "label": "setosa"},
        {"request_id": request_id, "record": 0, "label": "virginica"},
    ]

    response = _post(served, "/labels", {"labels": labels})

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["refused"], body["duplicates"]) == (2, 0, 1)
    assert f"replaced by a later one for the same request_id and record in this call (e.g. '{request_id}' record 0)" in (
        "\n".join(body["problems"])
    )
    assert _stored(served, request_id) == {0: "virginica", 1: "setosa"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"labels": [', 400, "Invalid JSON"),
        ({"labels": 3}, 400, "'labels' is a number, not a list"),
        ({"labels": {"request_id": "x", "label": "setosa"}}, 400, "'labels' is an object, not a list"),
        ({"labels": ["x", {"request_id": "x"}, 5]}, 400, "every label must be an object: labels[0] is a string, labels[2] is a number"),
        ({"labels": []}, 422, "'labels' is empty: send at least one label"),
        ({"rows": []}, 400, "'labels' is missing"),
        ({"labels": [{"request_id": "x", "truth": "setosa"}]}, 400, "no label has a 'label' (or 'species') key"),
        ({"labels": [{"request_id": "x", "record": 10**400, "label": 10**400}]}, 422, "record is not a whole number"),
    ],
    ids=["not-json", "number", "object", "not-objects", "empty", "no-labels", "no-label-key", "huge-numbers"],
)
def test_labels__a_malformed_body_is_a_4xx_naming_the_shape_and_serving_goes_on(served: Served, body, status, message):
    response = _post(served, "/labels", body)

    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    if status == 400 and body != b'{"labels": [':
        assert '{"labels": [{"request_id":' in response.json()["error"]
    assert _post(served, "/predict", {"records": served.rows[:1]}).status_code == 200
    log = served.server.log_path.read_text(encoding="utf-8")
    assert "Traceback" not in log and "[ERROR]" not in log


@pytest.mark.slow
def test_labels__need_the_api_key_like_predict(served: Served):
    request_id = _predict(served, 1)
    body = {"labels": [{"request_id": request_id, "label": "versicolor"}]}

    without = _post(served, "/labels", body, headers={})
    wrong = _post(served, "/labels", body, headers={"X-API-Key": "nope"})
    with_key = _post(served, "/labels", body, headers={"X-API-Key": KEY})

    assert (without.status_code, wrong.status_code, with_key.status_code) == (401, 401, 200)
    assert "API key" in without.json()["error"]
    assert _stored(served, request_id) == {0: "versicolor"}


@pytest.mark.slow
def test_labels__the_openapi_document_types_the_body_with_the_models_classes(served: Served):
    document = httpx.get(f"{served.server.url}/docs.json", timeout=10.0).json()

    operation = document["paths"]["/labels"]["post"]
    content = operation["requestBody"]["content"]["application/json"]
    schema = content["schema"]
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    item = schema["properties"]["labels"]["items"]
    assert item["properties"]["label"]["enum"] == CLASSES and item["required"] == ["request_id", "label"]
    assert content["example"]["labels"][0]["label"] == "setosa"
    assert {"400", "401", "404", "413", "422"} <= set(operation["responses"])
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    answer = document["components"]["schemas"][answer["$ref"].rsplit("/", 1)[-1]] if "$ref" in answer else answer
    assert set(answer["properties"]) == {"accepted", "refused", "unknown_request_ids", "duplicates", "problems"}


@pytest.mark.slow
def test_labels__requests_another_process_logged_are_known_from_the_log(served: Served):
    # Given predictions this server never answered, in its log folder: JSON lines and a bulk Parquet file
    _log(served.settings.predictions_dir, "other-server-small", rows=2)
    _log(served.settings.predictions_dir, "other-server-bulk", rows=BULK_ROWS)
    labels = [{"request_id": "other-server-small", "record": 1, "label": "setosa"}]
    labels += [{"request_id": "other-server-bulk", "record": k, "label": CLASSES[k % 3]} for k in range(BULK_ROWS)]
    # When their labels are posted
    response = _post(served, "/labels", {"labels": labels})
    # Then the server read their ids from the log and stored every label
    assert response.status_code == 200, response.text
    assert (response.json()["accepted"], response.json()["unknown_request_ids"]) == (BULK_ROWS + 1, 0)
    assert _stored(served, "other-server-small") == {1: "setosa"}
    assert len(_stored(served, "other-server-bulk")) == BULK_ROWS
