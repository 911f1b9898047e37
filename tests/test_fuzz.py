"""Fuzz a real served model from its own OpenAPI document (``/docs.json``) with schemathesis.

schemathesis generates valid and invalid requests for every operation the document
lists (``/predict``, ``/predict_batched``, ``/labels``, ``/arrow/predict``, the health
endpoints) with every check on; the server's own counters (``/metrics``) say how many
requests it answered and with which status, so "0 server errors" is the server's word,
not the fuzzer's. A valid request must still answer 200 afterwards. The default run
is ~2,200 requests; ``-m fuzz_long`` runs ten times as many.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import registered

from mlops.config import load_settings
from mlops.environment import tool_environment
from mlops.serving import ServerProcess, free_port, import_model, start_server

# The Arrow endpoint's body is binary (an Arrow IPC stream no JSON Schema can describe):
# schemathesis sends the bytes it generates for a binary string as they are.
HOOKS = """import schemathesis

schemathesis.serializer.alias("application/vnd.apache.arrow.stream", "application/octet-stream")
"""

# Every check stays on. Two operations accept more refusals of schema-valid data, as documented:
CONFIG = """
# A label must name a request_id that /predict answered, which no schema can say: a
# schema-valid label for an unknown request is refused with 422 (documented in /docs.json).
[[operations]]
include-path = "/labels"
checks.positive_data_acceptance.expected-statuses = [200, 422]

# The document types the Arrow body as binary; random bytes are not an Arrow IPC stream (400),
# nor a stream holding the model's columns (422).
[[operations]]
include-path = "/arrow/predict"
checks.positive_data_acceptance.expected-statuses = [200, 400, 422]
"""


@dataclass(frozen=True)
class Served:
    server: ServerProcess
    record: dict[str, float]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = load_settings(state_dir=tmp_path_factory.mktemp("fuzz") / "state")
    with tool_environment(settings):
        features = registered.features()
        tag = import_model(settings.model.name, registered.register(settings, C=1.0))
        with start_server(settings, tag, port=free_port()) as server:
            yield Served(server, features.head(1).to_dict(orient="records")[0])


def _answered(served: Served) -> collections.Counter[str]:
    """Requests the server answered so far, by status class (2xx, 4xx, 5xx), from its Prometheus counters."""
    import httpx

    counts: collections.Counter[str] = collections.Counter()
    for line in httpx.get(f"{served.server.url}/metrics", timeout=30.0).text.splitlines():
        match = re.match(r'bentoml_service_request_duration_seconds_count\{.*http_response_code="(\d)\d\d".*\} (\S+)$', line)
        if match and 'endpoint="/metrics"' not in line:
            counts[f"{match.group(1)}xx"] += int(float(match.group(2)))
    return counts


def _fuzz(served: Served, folder: Path, max_examples: int, phases: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    (folder / "mlops_fuzz_hooks.py").write_text(HOOKS)
    (folder / "schemathesis.toml").write_text(CONFIG)
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--config-file", str(folder / "schemathesis.toml"),
        "run", f"{served.server.url}/docs.json", "--checks", "all", "--max-examples", str(max_examples),
        "--seed", "2", "--phases", phases, "--generation-database", "none", "--workers", "2", "--no-color",
        "--request-timeout", "30", "--report", "json", "--report-dir", str(folder / "report"),
    ]  # fmt: skip
    environment = {**os.environ, "SCHEMATHESIS_HOOKS": "mlops_fuzz_hooks", "PYTHONPATH": str(folder)}
    run = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=1800)
    reports = sorted((folder / "report").glob("json-*.json"))
    return run, json.loads(reports[-1].read_text()) if reports else {}


def _check_fuzzed(served: Served, tmp_path: Path, max_examples: int, phases: str, at_least: int) -> None:
    import httpx

    before = _answered(served)
    run, report = _fuzz(served, tmp_path, max_examples, phases)
    answered = _answered(served) - before

    print(f"schemathesis: {report.get('test_cases')}; the server answered {dict(answered)}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert report["test_cases"]["with_failures"] == 0 and not report["errors"]
    assert answered["5xx"] == 0
    assert sum(answered.values()) >= at_least
    valid = httpx.post(f"{served.server.url}/predict", json={"records": [served.record]}, timeout=30.0)
    assert valid.status_code == 200, valid.text


@pytest.mark.slow
def test_fuzz__generated_requests_never_get_a_server_error(served: Served, tmp_path: Path):
    _check_fuzzed(served, tmp_path, max_examples=350, phases="examples,coverage,fuzzing", at_least=2000)


@pytest.mark.slow
@pytest.mark.fuzz_long
def test_fuzz_long__ten_times_as_many_requests(served: Served, tmp_path: Path):
    _check_fuzzed(served, tmp_path, max_examples=3500, phases="examples,coverage,fuzzing,stateful", at_least=20_000)
