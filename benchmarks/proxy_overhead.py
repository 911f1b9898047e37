"""How much the swap proxy costs: the same load straight at the model server and
through the proxy of a deployment (a RandomForest, one record per request).

    .venv/bin/python benchmarks/proxy_overhead.py [--seconds 10] [--concurrency 32]

Registers a model in a temporary state folder, runs `mlops deploy`'s code, measures,
stops everything. Figures depend on the machine: compare the two rows, not the numbers.
"""

from __future__ import annotations

import argparse
import sys
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


async def load(url: str, path: str, seconds: float, concurrency: int, record: dict) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = await client.post(path, json={"records": [record]})
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    latencies.sort()
    return {
        "rps": len(latencies) / seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "non_2xx": errors,
    }


def register_forest(settings) -> str:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature
    from sklearn.ensemble import RandomForestClassifier

    frame = pd.read_csv(REPO / "data" / "train.csv")
    features, target = frame.drop(columns="target"), frame["target"]
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(features, target)
    location = settings.mlflow_artifact_dir.resolve().as_uri()  # not ./mlruns
    mlflow.set_experiment(experiment_id=mlflow.create_experiment(settings.model.experiment, artifact_location=location))
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(features, model.predict(features)),
            registered_model_name=settings.model.name, pip_requirements=["scikit-learn"],
            serialization_format="skops", skops_trusted_types=["sklearn.tree._tree.Tree"],
        )  # fmt: skip
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(settings.model.name, "champion", version)
    return version


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="1 s per row at concurrency 4 (smoke run).")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.concurrency = 1.0, 4
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import Row, write_results

    rows: list = []

    import pandas as pd

    from mlops.config import load_settings
    from mlops.deployment import deploy, stop_deployment
    from mlops.environment import tool_environment
    from mlops.serving import free_port

    record = pd.read_csv(REPO / "data" / "train.csv").drop(columns="target").iloc[0].to_dict()
    state_dir = Path(tempfile.mkdtemp(prefix="proxy-bench-")) / "state"
    settings = load_settings(state_dir=state_dir, serving={"port": free_port()})
    with tool_environment(settings):
        register_forest(settings)
        state = deploy(settings)
        print(f"deployment ready in {state.backend.ready_seconds} s")
        try:
            for path in ("/predict_batched", "/predict"):
                for concurrency in (1, args.concurrency):
                    measured = {}
                    for name, url in (("direct", state.backend.url), ("proxy", state.url)):
                        result = measured[name] = asyncio.run(load(url, path, args.seconds, concurrency, record))
                        print(f"{path:17} c={concurrency:<3} {name:7} " + "  ".join(
                            f"{key}={value:.1f}" if isinstance(value, float) else f"{key}={value}"
                            for key, value in result.items()
                        ))  # fmt: skip
                    label = f"{path} c={concurrency}"
                    rows.append(Row(f"{label}: req/s via proxy vs direct", measured["proxy"]["rps"], measured["direct"]["rps"], "req/s"))
                    rows.append(Row(f"{label}: p99 via proxy vs direct", measured["proxy"]["p99_ms"], measured["direct"]["p99_ms"], "ms"))
                    rows.append(Row(f"{label}: non-2xx via proxy", measured["proxy"]["non_2xx"], None, "responses", "0"))
        finally:
            stop_deployment(settings)
    write_results("proxy_overhead", rows, "RandomForest (100 trees), one record per request, httpx asyncio clients.", quick=args.quick)


if __name__ == "__main__":
    main()
