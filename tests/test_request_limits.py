"""Bounded work per request, and a 4xx for every malformed one, against a real served model.

The body limits (:class:`mlops.request_check.BodyLimits`) are checked on the bytes
before BentoML parses them, the record limit before any record is looked at; the
worst bodies that fit ``serving.max_request_bytes`` are sent to a real ``bentoml
serve`` while another client keeps sending valid requests, and the server's memory
(its process tree, read from /proc) and the other client's latency are measured.
One server for the module, with a small rotating log (``serving.log_max_bytes``).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import registered

from mlops.config import load_settings
from mlops.environment import tool_environment
from mlops.request_check import ARROW_STREAM, BodyLimits, FeatureSpec, RequestCheck, RequestRefused
from mlops.serving import ServerProcess, free_port, import_model, start_server

LOG_MAX_BYTES = 32 * 1024
MAX_BYTES = 32 * 1024 * 1024  # serving.max_request_bytes' default, which the server keeps
JSON = {"content-type": "application/json"}


# --- The limits alone -----------------------------------------------------------------


def test_body_limits__count_structure_outside_strings_only():
    limits = BodyLimits(max_items=2, max_depth=4, max_values=10)
    text_like_structure = json.dumps({"records": [{"a": "[{,}]" * 1000, "b": 'q\\"[[[[[[,,,,,,'}]}).encode()

    limits.check(text_like_structure)  # brackets and commas in strings are text: accepted

    with pytest.raises(RequestRefused, match="nests objects and lists 6 deep") as refused:
        limits.check(b'{"records": [[[[[1]]]]]}')
    assert refused.value.status == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"records": [' + b"{}," * 9 + b"{}]}", "holds 12 JSON objects and lists, over the limit of 8: send at most 2 records"),
        (b'{"records": [{"a": [' + b"0," * 20 + b"0]}]}", "about 21 JSON values, over the limit of 10 (serving.max_json_values)"),
        (b'{"records": ' + b"[" * 5 + b"]" * 5 + b"}", "6 deep, over the limit of 4 (serving.max_json_depth)"),
    ],
    ids=["objects", "values", "depth"],
)
def test_body_limits__refuse_a_body_over_a_limit_with_413_naming_it(body, message):
    with pytest.raises(RequestRefused, match=re.escape(message)) as refused:
        BodyLimits(max_items=2, max_depth=4, max_values=10).check(body)

    assert refused.value.status == 413


def test_body_limits__cost_milliseconds_for_a_32_mib_body_of_empty_objects():
    body = b'{"records": [' + b"{}," * (MAX_BYTES // 3 - 10) + b"{}]}"
    start = time.perf_counter()

    with pytest.raises(RequestRefused, match="JSON objects and lists"):
        BodyLimits(max_items=10_000, max_depth=32, max_values=2_000_000).check(body)

    elapsed = time.perf_counter() - start
    print(f"32 MiB of empty objects refused in {elapsed * 1000:.0f} ms")
    assert elapsed < 5.0  # measured ~0.2-0.5 s; json.loads of it takes ~40 s and gigabytes


def test_request_check__more_records_than_the_limit_is_413_before_any_record_is_checked():
    check = RequestCheck((FeatureSpec("a", "float"),), max_records=10)

    with pytest.raises(RequestRefused, match="11 records, over the limit of 10 .serving.max_records.") as refused:
        check.records([{"a": "not a number"}] * 11)

    assert refused.value.status == 413
    assert check.records([{"a": 1.0}] * 10).frame.shape == (10, 1)


def test_arrow__rows_are_counted_before_any_value_is_converted():
    import pyarrow as pa

    # A few hundred bytes declaring 100 million null rows: 800 MB of None once converted.
    check = RequestCheck((FeatureSpec("a", "float", nullable=True),), max_records=10_000)
    body = _arrow(pa.table({"a": pa.nulls(100_000_000)}))
    assert len(body) < 100_000

    with pytest.raises(RequestRefused, match="more than 10000 rows, over the limit of 10000") as refused:
        check.arrow(body)

    assert refused.value.status == 413


# --- A served model ---------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    server: ServerProcess
    records: list[dict[str, float]]

    @property
    def feature(self) -> str:
        return next(iter(self.records[0]))

    def logs(self) -> list[Path]:
        return sorted(self.server.log_path.parent.glob(f"{self.server.log_path.name}*"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    serving = {"log_max_bytes": LOG_MAX_BYTES, "log_backups": 2}
    settings = load_settings(state_dir=tmp_path_factory.mktemp("limits") / "state", serving=serving)
    with tool_environment(settings):
        features = registered.features()
        tag = import_model(settings.model.name, registered.register(settings, C=1.0))
        with start_server(settings, tag, port=free_port()) as server:
            yield Served(server, features.head(50).to_dict(orient="records"))


def _post(served: Served, path: str, body: bytes, content_type: str | None = "application/json", timeout: float = 60.0):
    import httpx

    headers = {} if content_type is None else {"content-type": content_type}
    return httpx.post(f"{served.server.url}{path}", content=body, headers=headers, timeout=timeout)


def _arrow(table) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _json_cases(served: Served, key: str) -> dict[str, tuple[bytes, str | None]]:
    """Malformed bodies for a JSON endpoint taking ``{key: [...]}``."""
    record = dict(served.records[0])
    field = served.feature if key == "records" else "record"
    item = record if key == "records" else {"request_id": "x", "record": 0, "label": 1}

    def with_value(literal: str) -> bytes:
        return json.dumps({key: [{**item, field: "VALUE"}]}).replace('"VALUE"', literal).encode()

    multipart = b'--b\r\nContent-Disposition: form-data; name="' + key.encode() + b'"\r\n\r\n[{}]\r\n--b--\r\n'
    return {
        "empty list": (json.dumps({key: []}).encode(), "application/json"),
        "duplicate key ending in []": (b'{"' + key.encode() + b'": [{}], "' + key.encode() + b'": []}', "application/json"),
        "10**400": (with_value(str(10**400)), "application/json"),
        "NaN": (with_value("NaN"), "application/json"),
        "Infinity": (with_value("Infinity"), "application/json"),
        "-Infinity": (with_value("-Infinity"), "application/json"),
        "not objects": (json.dumps({key: [1, "a", None, [2]]}).encode(), "application/json"),
        "not a list": (json.dumps({key: {"a": 1}}).encode(), "application/json"),
        "deep nesting": (b'{"' + key.encode() + b'": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json"),
        "200,000 empty objects": (json.dumps({key: [{}] * 200_000}).encode(), "application/json"),
        "multipart": (multipart, "multipart/form-data; boundary=b"),
        "multipart without boundary": (multipart, "multipart/form-data"),
        "form": (b"records=1", "application/x-www-form-urlencoded"),
        "text/plain": (json.dumps({key: [item]}).encode(), "text/plain"),
        "pickle": (b"\x80\x04K\x01.", "application/vnd.bentoml+pickle"),
        "not utf-8": (b"\xff\xfe{", "application/json"),
        "not json": (b'{"' + key.encode() + b'": [', "application/json"),
        "empty body": (b"", "application/json"),
        "no content type": (b"[]", None),
        "a list body": (b"[]", "application/json"),
    }


def _arrow_cases(served: Served) -> dict[str, tuple[bytes, str | None]]:
    import pyarrow as pa

    names = list(served.records[0])
    text = pa.table({name: pa.array(["x"]) for name in names})
    huge = pa.table({name: pa.nulls(50_000_000) for name in names})
    return {
        "json": (json.dumps({"records": served.records[:1]}).encode(), ARROW_STREAM),
        "garbage": (b"\xff\xfe\x00\x01" * 10, ARROW_STREAM),
        "empty": (b"", ARROW_STREAM),
        "a missing column": (_arrow(pa.table({names[0]: pa.array([1.0])})), ARROW_STREAM),
        "text columns": (_arrow(text), ARROW_STREAM),
        "50 million null rows": (_arrow(huge), ARROW_STREAM),
    }


JSON_CASES = [
    "empty list", "duplicate key ending in []", "10**400", "NaN", "Infinity", "-Infinity", "not objects",
    "not a list", "deep nesting", "200,000 empty objects", "multipart", "multipart without boundary", "form",
    "text/plain", "pickle", "not utf-8", "not json", "empty body", "no content type", "a list body",
]  # fmt: skip
ARROW_CASES = ["json", "garbage", "empty", "a missing column", "text columns", "50 million null rows"]


@pytest.mark.slow
@pytest.mark.parametrize("case", JSON_CASES)
@pytest.mark.parametrize("path", ["/predict", "/predict_batched", "/labels"])
def test_malformed_json__is_a_4xx_with_a_message(served: Served, path: str, case: str):
    body, content_type = _json_cases(served, "labels" if path == "/labels" else "records")[case]

    response = _post(served, path, body, content_type)

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"], response.text


@pytest.mark.slow
@pytest.mark.parametrize("case", ARROW_CASES)
def test_malformed_arrow__is_a_4xx_with_a_message(served: Served, case: str):
    body, content_type = _arrow_cases(served)[case]

    response = _post(served, "/arrow/predict", body, content_type)

    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"], response.text


@pytest.mark.slow
def test_malformed__named_answers_for_the_cases_the_issue_found(served: Served):
    cases = _json_cases(served, "records")

    answers = {case: _post(served, "/predict", *cases[case]) for case in ("empty list", "duplicate key ending in []",
               "10**400", "multipart without boundary", "200,000 empty objects", "deep nesting", "NaN")}  # fmt: skip

    assert answers["empty list"].status_code == 422 and "'records' is empty" in answers["empty list"].text
    assert answers["duplicate key ending in []"].status_code == 422
    assert answers["10**400"].status_code == 422 and "is too large for a number" in answers["10**400"].text
    assert answers["multipart without boundary"].status_code == 415
    assert "Content-Type: application/json" in answers["multipart without boundary"].json()["error"]
    assert answers["200,000 empty objects"].status_code == 413
    assert "at most 10000 records" in answers["200,000 empty objects"].json()["error"]
    assert answers["deep nesting"].status_code == 413 and "serving.max_json_depth" in answers["deep nesting"].text
    assert answers["NaN"].status_code == 422 and f"records[0].{served.feature}" in answers["NaN"].text


@pytest.mark.slow
def test_client_errors__are_one_info_line_each_never_a_traceback(served: Served):
    cases = _json_cases(served, "records")
    for case in ("multipart without boundary", "10**400", "deep nesting", "empty list"):
        _post(served, "/predict", *cases[case])
    _post(served, "/arrow/predict", *_arrow_cases(served)["garbage"])
    time.sleep(0.5)

    log = "".join(path.read_text(encoding="utf-8", errors="replace") for path in served.logs())

    assert "POST /predict refused 415" in log and "POST /arrow/predict refused 400" in log
    refused = [line for line in log.splitlines() if " refused 4" in line]
    assert refused and all("[INFO]" in line for line in refused)
    assert "Traceback" not in log and "[ERROR]" not in log


# --- The worst bodies ---------------------------------------------------------------------


def _worst_bodies(served: Served) -> dict[str, tuple[str, bytes, str]]:
    """The costliest bodies within serving.max_request_bytes: (path, body, content type)."""
    import pyarrow as pa

    size = MAX_BYTES - 1024
    json_type = "application/json"
    names = list(served.records[0])
    many_strings = b",".join(b'"{[%06d]}"' % (index % 10**6) for index in range(size // 13))
    refused_records = json.dumps({"records": [{name: "x" for name in names}] * 10_000}).encode()
    return {
        "200,000 empty objects": ("/predict", json.dumps({"records": [{}] * 200_000}).encode(), json_type),
        "32 MiB of empty objects": ("/predict", b'{"records": [' + b"{}," * (size // 3) + b"{}]}", json_type),
        "32 MiB of empty lists": ("/predict_batched", b'{"records": [' + b"[]," * (size // 3) + b"[]]}", json_type),
        "32 MiB of zeros": ("/predict", b'{"records": [' + b"0," * (size // 2) + b"0]}", json_type),
        "32 MiB of floats in one record": ("/predict", b'{"records": [{"x": [' + b"0.5," * (size // 4) + b"1]}]}", json_type),
        "32 MiB of strings of brackets": ("/predict", b'{"records": [{"x": [' + many_strings + b"]}]}", json_type),
        "32 MiB of nesting": ("/predict", b'{"records": ' + b"[" * (size // 2) + b"]" * (size // 2) + b"}", json_type),
        "32 MiB of labels": ("/labels", b'{"labels": [' + b"{}," * (size // 3) + b"{}]}", json_type),
        "10,000 records, every value refused": ("/predict", refused_records, json_type),
        "Arrow: 50 million null rows": (
            "/arrow/predict", _arrow(pa.table({name: pa.nulls(50_000_000) for name in names})), ARROW_STREAM,
        ),
    }  # fmt: skip


def _tree_rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every process below it (BentoML's workers run in their own group)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError):
                continue
    tree, added = {pid}, {pid}
    while added:
        added = {child for child, parent in parents.items() if parent in added} - tree
        tree |= added
    total = 0
    for member in tree:
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            continue
    return total


@pytest.mark.slow
def test_worst_bodies__answer_4xx_with_bounded_memory_while_other_clients_are_served(served: Served):
    import httpx

    bodies = _worst_bodies(served)
    valid = json.dumps({"records": served.records[:1]}).encode()
    _post(served, "/predict", json.dumps({"records": served.records * 200}).encode())  # 10,000 valid records: warm
    baseline = _tree_rss(served.server.process.pid)
    peak, latencies, failures, done = [baseline], [], [], threading.Event()

    def sample_memory() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(served.server.process.pid))
            time.sleep(0.05)

    def other_client() -> None:
        with httpx.Client(timeout=60.0) as client:
            while not done.is_set():
                start = time.perf_counter()
                response = client.post(f"{served.server.url}/predict", content=valid, headers=JSON)
                status = response.status_code
                latencies.append(time.perf_counter() - start)
                if status != 200:
                    failures.append(status)

    threads = [threading.Thread(target=sample_memory), threading.Thread(target=other_client)]
    for thread in threads:
        thread.start()
    answers = {}
    try:
        time.sleep(0.5)
        for name, (path, body, content_type) in bodies.items():
            for _ in range(2):
                start = time.perf_counter()
                response = _post(served, path, body, content_type)
                answers[name] = (response.status_code, time.perf_counter() - start, response.json().get("error", "")[:90])
    finally:
        done.set()
        for thread in threads:
            thread.join()

    growth = (peak[0] - baseline) / 2**20
    p99 = sorted(latencies)[int(0.99 * (len(latencies) - 1))]
    for name, (status, seconds, error) in answers.items():
        print(f"{name}: {status} in {seconds:.2f} s: {error}")
    print(f"server RSS {baseline / 2**20:.0f} MB, peak growth {growth:.0f} MB; other client: {len(latencies)} "
          f"requests, p99 {p99 * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms")  # fmt: skip
    assert all(400 <= status < 500 for status, _, _ in answers.values()), answers
    assert not failures and latencies
    assert growth < 500  # measured 150-180 MB (a 32 MiB body and its counts); parsed, 32 MiB of {} took 6.8 GB
    assert p99 < 2.0  # measured ~0.1 s on a loaded 2-core machine (1 s with the counts on the loop); before, ~20 s
    assert _post(served, "/predict", valid).status_code == 200


# --- The server log -------------------------------------------------------------------------


@pytest.mark.slow
def test_server_log__rotates_by_size_and_keeps_logging(served: Served):
    import httpx

    body = _json_cases(served, "records")["not objects"][0]
    last = served.server.log_path.with_name(f"{served.server.log_path.name}.2")
    with httpx.Client(timeout=30.0) as client:
        sent = 0
        while sent < 50 or (not last.exists() and sent < 3000):  # a refused request logs ~300 bytes
            client.post(f"{served.server.url}/predict", content=body, headers=JSON)
            sent += 1
        for _ in range(sent // 2):  # half as many again: the oldest file is dropped, none added
            client.post(f"{served.server.url}/predict", content=body, headers=JSON)
    _post(served, "/predict", *_json_cases(served, "records")["multipart"])
    time.sleep(0.5)

    logs = served.logs()

    print(f"{sent * 3 // 2} refused requests: {[(path.name, path.stat().st_size) for path in logs]}")
    assert [path.name for path in logs] == sorted(f"{served.server.log_path.name}{end}" for end in ("", ".1", ".2"))
    assert all(path.stat().st_size <= LOG_MAX_BYTES + 1024 for path in logs)
    assert "POST /predict refused 415" in served.server.log_path.read_text(encoding="utf-8")
    assert _post(served, "/predict", json.dumps({"records": served.records[:1]}).encode()).status_code == 200
