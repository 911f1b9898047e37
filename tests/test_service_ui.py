"""What users look at on a running server: the Swagger page, the OpenAPI document and /metrics.

Two real ``bentoml serve`` processes on 127.0.0.1, one per module (a start takes ~10 s):
a text-label classifier (``flowers``: setosa, versicolor, virginica) and a regressor
(``prices``), both built from ``tests/datasets.py`` and registered as training does.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from test_request_check import as_json_records
from test_serving import Served, _serve_dataset


@pytest.fixture(scope="module")
def flowers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve_dataset("flowers", tmp_path_factory.mktemp("flowers-ui"))


@pytest.fixture(scope="module")
def prices(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    yield from _serve_dataset("prices", tmp_path_factory.mktemp("prices-ui"))


def _metrics(served: Served) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, labels), parsed by prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{served.server.url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _post(served: Served, path: str, records: list[dict]) -> httpx.Response:
    return httpx.post(f"{served.server.url}{path}", json={"records": records}, timeout=30)


@pytest.mark.slow
def test_openapi__titled_with_the_model_and_every_endpoint_described(flowers: Served):
    document = httpx.get(f"{flowers.server.url}/docs.json", timeout=10).json()

    assert document["info"]["title"] == f"flowers-model {flowers.version}"
    assert document["info"]["version"] == flowers.version
    assert "None" not in document["info"]["description"] and "shields.io" not in json.dumps(document)
    for path in ("/predict", "/predict_batched", "/arrow/predict", "/labels", "/readyz", "/metrics"):
        for operation in document["paths"][path].values():
            assert operation["summary"] and operation["description"], path
    assert {"400", "401", "413", "415", "422"} <= set(document["paths"]["/predict"]["post"]["responses"])
    assert "503" in document["paths"]["/predict_batched"]["post"]["responses"]
    assert "setosa" in json.dumps(document["paths"]["/predict"]["post"]["responses"]["200"])


@pytest.mark.slow
def test_docs_page__titled_with_the_model_and_fetching_nothing_from_the_network(flowers: Served):
    url = flowers.server.url

    page = httpx.get(f"{url}/docs", timeout=10)

    assert page.status_code == 200 and f"flowers-model {flowers.version}" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no tag manager, badge or validator
    assert "validatorUrl: null" in page.text
    for asset in re.findall(r'(?:src|href)="\./([^"]+)"', page.text):
        assert httpx.get(f"{url}/{asset}", timeout=10).status_code == 200, asset
    assert httpx.get(f"{url}/", timeout=10).text == page.text  # BentoML's index page loads Google Tag Manager


@pytest.mark.slow
def test_metrics__predictions_per_class_model_info_and_refusals_by_column(flowers: Served):
    rows = flowers.features.dropna().iloc[:10]
    expected = Counter(str(label) for label in flowers.pipeline.predict(rows))
    records = as_json_records(rows)
    bad = [dict(records[0], **{"petal length (cm)": "x"}), records[1]]
    wrong_type = [{key: value for key, value in record.items() if key != "garden"} | {"garden": 5} for record in records[:2]]

    assert _post(flowers, "/predict", records[:7]).status_code == 200
    assert _post(flowers, "/predict_batched", records[7:]).status_code == 200
    assert _post(flowers, "/predict", bad).status_code == 422
    assert _post(flowers, "/predict", bad).status_code == 422
    assert _post(flowers, "/predict_batched", wrong_type).status_code == 422
    metrics = _metrics(flowers)

    for label in ("setosa", "versicolor", "virginica"):
        assert metrics.get(("mlops_predictions_total", (("class", label),)), 0.0) == expected[label], label
    assert metrics[("mlops_model_info", (("model", "flowers-model"), ("version", flowers.version)))] == 1.0
    assert metrics[("mlops_requests_refused_total", (("column", "petal length (cm)"),))] == 2.0
    assert metrics[("mlops_requests_refused_total", (("column", "garden"),))] == 1.0
    request = ("endpoint", "/predict"), ("http_response_code", "422")
    assert any(name == "bentoml_service_request_total" and set(request) <= set(labels) and value == 2.0
               for (name, labels), value in metrics.items())  # BentoML's own, by endpoint and status


@pytest.mark.slow
def test_metrics__a_regressor_observes_every_predicted_value(prices: Served):
    rows = prices.features.dropna().iloc[:15]
    records = as_json_records(rows)

    assert _post(prices, "/predict", records[:12]).status_code == 200
    assert _post(prices, "/predict_batched", records[12:]).status_code == 200
    metrics = _metrics(prices)

    assert metrics[("mlops_prediction_value_count", ())] == 15.0
    assert metrics[("mlops_prediction_value_sum", ())] == pytest.approx(float(prices.pipeline.predict(rows).sum()))
    assert metrics[("mlops_prediction_value_bucket", (("le", "+Inf"),))] == 15.0
    assert metrics[("mlops_model_info", (("model", "prices-model"), ("version", prices.version)))] == 1.0
    assert not any(name == "mlops_predictions_total" for name, _ in metrics)
    assert httpx.get(f"{prices.server.url}/docs.json", timeout=10).json()["info"]["title"] == f"prices-model {prices.version}"
