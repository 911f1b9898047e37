"""Serving throughput and latency: our deployed endpoint vs the endpoints users would
otherwise run, same model, same machine, same run.

    .venv/bin/python benchmarks/serving.py [--seconds 4] [--rounds 3] [--quick]

Contenders, one worker each, all on 127.0.0.1:

* **ours** — ``mlops deploy``: the swap proxy in front of the BentoML service. Requests
  go to ``/predict`` (concurrent requests merged into one model call without a wait
  window, ``mlops/service/batching.py``) and, as extra rows, single records to
  ``/predict_batched`` (BentoML's adaptive batching); batches also to ``/arrow/predict``
  (Arrow IPC);
* **mlflow** — ``mlflow models serve --env-manager local`` on the same registered version
  (``/invocations``, ``dataframe_records`` / ``dataframe_split``);
* **bare** — Starlette + uvicorn calling ``predict_proba`` (``benchmarks/_bare_server.py``):
  the limit of a hand-written endpoint without batching or any checks.

Models: a RandomForest of 100 trees (expensive per call) and a StandardScaler +
LogisticRegression pipeline (cheap per call), on the breast-cancer training data
(numbers only); and, so the request check's text and bool columns are measured, a
one-hot + LogisticRegression pipeline on ``tests/datasets.py``'s churn table (seven
numbers, an integer, a text category and a bool; served with its drafted contract).
Scenarios: single-record requests at 1, 8 and 32 concurrent connections; 100-row batches
at 8; 10,000-row batches at 1 (rows/s, against in-process ``predict_proba`` rows/s on the
same frame); the churn model at 1 record × 32 clients and 10,000-row batches only. The load client is ``benchmarks/_load.py`` in its own process; each round
runs every contender once, in an order rotated per round, and the table keeps each
figure's median over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARROW_STREAM = "application/vnd.apache.arrow.stream"


@dataclass(frozen=True)
class Scenario:
    rows: int
    concurrency: int

    @property
    def label(self) -> str:
        kind = "single record" if self.rows == 1 else f"{self.rows:,}-row batches"
        return f"{kind}, c={self.concurrency}"


@dataclass(frozen=True)
class Request:
    """What one contender is sent in one scenario."""

    contender: str
    url: str
    body: Path
    content_type: str = "application/json"


@dataclass(frozen=True)
class Dataset:
    """What a model is fitted on and sent; ``contract`` describes it (None: the bundled one)."""

    features: object  # pandas DataFrame
    target: object  # pandas Series
    contract: object = None


def breast_cancer() -> Dataset:
    import pandas as pd

    frame = pd.read_csv(REPO / "data" / "train.csv")
    return Dataset(frame.drop(columns="target"), frame["target"])


def churn() -> Dataset:
    """tests/datasets.py's churn table: text and bool features, text labels (No/Yes)."""
    sys.path.insert(0, str(REPO / "tests"))
    from datasets import build

    from mlops.contract import draft_contract

    train, _, spec = build("churn")
    contract = draft_contract(train, spec.target, "churn")
    return Dataset(train[[column.name for column in contract.features]], train[spec.target], contract)


def churn_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numbers = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
    categories = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    columns = ColumnTransformer([("numbers", numbers, ["mean.radius", "mean.texture", "mean.perimeter", "worst radius", "worst texture", "worst perimeter", "worst concave points", "tenure_months"]), ("categories", categories, ["plan", "paperless"])])  # fmt: skip
    return make_pipeline(columns, LogisticRegression(max_iter=5000))


CATEGORICAL = "Churn text+bool features, LogisticRegression"
# The data each model is fitted on and sent (``register`` defaults to breast cancer).
DATASETS = {CATEGORICAL: churn}


def build_models() -> dict[str, object]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return {
        "RandomForest": RandomForestClassifier(n_estimators=100, random_state=0),
        "LogisticRegression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)),
        CATEGORICAL: churn_pipeline(),
    }


def data_settings(dataset: Dataset, folder: Path) -> dict:
    """The ``data`` section serving and the deploy smoke test need for a dataset of our own."""
    if dataset.contract is None:
        return {}
    from mlops.contract import write_contract

    training = folder / "training.csv"
    dataset.features.assign(**{dataset.contract.target: dataset.target}).to_csv(training, index=False)
    contract = write_contract(dataset.contract, folder / "contract.yaml")
    return {"name": dataset.contract.name, "training": str(training), "target": dataset.contract.target, "contract": str(contract)}


def register(settings, estimator, dataset: Dataset | None = None) -> str:
    """Fit on the dataset (default: the breast-cancer training data), log with a signature, register, alias ``champion``."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    dataset = dataset or breast_cancer()
    features, target = dataset.features, dataset.target
    model = estimator.fit(features, target)
    location = settings.mlflow_artifact_dir.resolve().as_uri()
    experiment = mlflow.create_experiment(settings.model.experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(features, model.predict(features)),
            registered_model_name=settings.model.name, pip_requirements=["scikit-learn"],
            serialization_format="skops", skops_trusted_types=_trusted_types(model),
        )  # fmt: skip
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(settings.model.name, "champion", version)
    return version


def _trusted_types(model) -> list[str]:
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def write_bodies(folder: Path, scenarios: list[Scenario], features) -> dict[tuple[str, int], Path]:
    """Request bodies per format and row count, sampled (seeded) from the training features."""
    import pyarrow as pa

    bodies: dict[tuple[str, int], Path] = {}
    for rows in sorted({scenario.rows for scenario in scenarios}):
        sample = features.sample(rows, replace=True, random_state=0) if rows > 1 else features.head(1)
        payloads = {
            "records": json.dumps({"records": sample.to_dict(orient="records")}),
            "mlflow": json.dumps(
                {"dataframe_records": sample.to_dict(orient="records")}
                if rows == 1
                else {"dataframe_split": sample.to_dict(orient="split", index=False)}
            ),
        }
        for kind, text in payloads.items():
            bodies[kind, rows] = folder / f"{kind}-{rows}.json"
            bodies[kind, rows].write_text(text)
        sink = pa.BufferOutputStream()
        table = pa.Table.from_pandas(sample, preserve_index=False)
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        bodies["arrow", rows] = folder / f"arrow-{rows}.arrows"
        bodies["arrow", rows].write_bytes(sink.getvalue().to_pybytes())
    return bodies


def requests_for(scenario: Scenario, urls: dict[str, str], bodies: dict) -> list[Request]:
    rows = scenario.rows
    if rows == 1:
        return [
            Request("ours", urls["ours"] + "/predict", bodies["records", 1]),
            Request("ours /predict_batched", urls["ours"] + "/predict_batched", bodies["records", 1]),
            Request("mlflow", urls["mlflow"] + "/invocations", bodies["mlflow", 1]),
            Request("bare", urls["bare"] + "/predict", bodies["records", 1]),
        ]
    return [
        Request("ours", urls["ours"] + "/predict", bodies["records", rows]),
        Request("ours arrow", urls["ours"] + "/arrow/predict", bodies["arrow", rows], ARROW_STREAM),
        Request("mlflow", urls["mlflow"] + "/invocations", bodies["mlflow", rows]),
        Request("bare", urls["bare"] + "/predict", bodies["records", rows]),
    ]


def run_load(request: Request, concurrency: int, seconds: float, warmup: float) -> dict:
    command = [
        sys.executable, str(HERE / "_load.py"), request.url, "--body", str(request.body),
        "--content-type", request.content_type, "--concurrency", str(concurrency),
        "--seconds", str(seconds), "--warmup", str(warmup),
    ]  # fmt: skip
    output = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(output.stdout.strip().splitlines()[-1])


def in_process_rows_per_second(model_dir: str, body: Path, repeats: int = 5) -> float:
    """``predict_proba`` on the batch already in a DataFrame: the ceiling for bulk requests."""
    import mlflow.sklearn
    import pandas as pd

    model = mlflow.sklearn.load_model(model_dir)
    frame = pd.DataFrame(json.loads(body.read_text())["records"])
    model.predict_proba(frame)
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.predict_proba(frame)
        timings.append(time.perf_counter() - started)
    return len(frame) / statistics.median(timings)


class Contenders:
    """The three servers for one model; stopped together."""

    def __init__(self, settings, model_dir: str) -> None:
        self.settings, self.model_dir, self.processes = settings, model_dir, []
        self.urls: dict[str, str] = {}

    def __enter__(self) -> Contenders:
        from mlops.deployment import deploy
        from mlops.serving import free_port

        self.urls["ours"] = deploy(self.settings).url
        try:
            mlflow_port, bare_port = free_port(), free_port()
            model_uri = f"models:/{self.settings.model.name}@champion"
            self._start("mlflow", mlflow_port, [
                sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(mlflow_port), "-w", "1",
            ])  # fmt: skip
            bare = [sys.executable, str(HERE / "_bare_server.py"), self.model_dir, str(bare_port)]
            self._start("bare", bare_port, bare)
        except BaseException:
            self.__exit__(None, None, None)  # nothing left running
            raise
        return self

    def _start(self, name: str, port: int, command: list[str]) -> None:
        import httpx

        log = open(Path(self.settings.state_dir) / f"{name}.log", "wb")
        # `mlflow models serve` runs `uvicorn` from PATH: the one next to this interpreter.
        env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.processes.append(process)
        self.urls[name] = f"http://127.0.0.1:{port}"
        health = self.urls[name] + ("/ping" if name == "mlflow" else "/readyz")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise RuntimeError(f"{name} did not start; see {log.name}")

    def __exit__(self, *exc_info: object) -> None:
        from mlops.deployment import stop_deployment

        for process in self.processes:
            process.terminate()
            process.wait(timeout=30)
        stop_deployment(self.settings)


def measure_model(
    name: str, estimator, dataset: Dataset, scenarios: list[Scenario], args: argparse.Namespace, folder: Path
) -> dict:
    """Median figures per (scenario, contender), plus in-process rows/s per batch size."""
    import mlflow

    from mlops.config import load_settings
    from mlops.environment import tool_environment
    from mlops.serving import free_port

    folder = folder / name.replace(" ", "-").replace(",", "").replace("+", "-")
    folder.mkdir(parents=True)
    settings = load_settings(
        state_dir=folder / "state", serving={"port": free_port()}, model={"name": f"bench-{folder.name.lower()}"},
        data=data_settings(dataset, folder),
    )  # fmt: skip
    bodies = write_bodies(folder, scenarios, dataset.features)
    results: dict[tuple[Scenario, str], list[dict]] = {}
    with tool_environment(settings):
        register(settings, estimator, dataset)
        model_dir = mlflow.artifacts.download_artifacts(f"models:/{settings.model.name}@champion", dst_path=str(folder / "model"))
        in_process = {
            scenario.rows: in_process_rows_per_second(model_dir, bodies["records", scenario.rows])
            for scenario in scenarios
            if scenario.rows > 1
        }
        with Contenders(settings, model_dir) as contenders:
            for round_index in range(args.rounds):
                for scenario in scenarios:
                    requests = requests_for(scenario, contenders.urls, bodies)
                    shift = round_index % len(requests)
                    for request in requests[shift:] + requests[:shift]:
                        result = run_load(request, scenario.concurrency, args.seconds, args.warmup)
                        results.setdefault((scenario, request.contender), []).append(result)
                        print(f"{name[:24]:24} {scenario.label:28} {request.contender:14} " + _show(result), flush=True)
    medians = {key: {field: statistics.median(run[field] for run in runs) for field in runs[0]} for key, runs in results.items()}
    return {"medians": medians, "in_process": in_process}


def _show(result: dict) -> str:
    return (
        f"{result['rps']:8.1f} req/s  p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms  "
        f"non-2xx {result['non_2xx']}"
    )


def table_rows(name: str, measured: dict, scenarios: list[Scenario]) -> list:
    from _results import Row

    medians, in_process = measured["medians"], measured["in_process"]
    forest = name == "RandomForest"
    rows = []
    for scenario in scenarios:
        ours, label = medians[scenario, "ours"], f"{name}, {scenario.label}"
        if scenario.rows == 1:
            top = scenario.concurrency == 32 and forest
            rows += [
                Row(f"{label}: req/s, ours vs mlflow models serve", ours["rps"], medians[scenario, "mlflow"]["rps"], "req/s", "≥ 10×" if top else ""),
                Row(f"{label}: req/s, ours vs bare Starlette", ours["rps"], medians[scenario, "bare"]["rps"], "req/s", "≥ 4×" if top else ""),
                Row(f"{label}: p50, ours vs bare", ours["p50_ms"], medians[scenario, "bare"]["p50_ms"], "ms", "≤ 1.25×" if forest and scenario.concurrency == 1 else ""),
                Row(f"{label}: p99, ours vs bare", ours["p99_ms"], medians[scenario, "bare"]["p99_ms"], "ms", "≤ 250 ms" if top else ""),
                Row(f"{label}: non-2xx answers, ours (median per round)", ours["non_2xx"], None, "", "0" if top else ""),
            ]
            cork = medians[scenario, "ours /predict_batched"]
            rows.append(Row(f"{label}: req/s, ours via BentoML adaptive batching (/predict_batched) vs bare", cork["rps"], medians[scenario, "bare"]["rps"], "req/s"))
            rows.append(Row(f"{label}: p99, ours via BentoML adaptive batching vs bare", cork["p99_ms"], medians[scenario, "bare"]["p99_ms"], "ms"))
            continue
        per_second = {contender: medians[scenario, contender]["rps"] * scenario.rows for contender in ("ours", "ours arrow", "mlflow", "bare")}
        big = scenario.rows >= 10_000
        rows += [
            Row(f"{label}: rows/s, ours JSON vs bare JSON", per_second["ours"], per_second["bare"], "rows/s", "≥ 1.2×" if big and forest else ""),
            Row(f"{label}: rows/s, ours JSON vs mlflow models serve", per_second["ours"], per_second["mlflow"], "rows/s"),
            Row(f"{label}: rows/s, ours Arrow vs in-process predict_proba", per_second["ours arrow"], in_process[scenario.rows], "rows/s", "≥ 0.8×" if big and forest else ""),
        ]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="Measured seconds per contender and scenario.")
    parser.add_argument("--warmup", type=float, default=1.0, help="Seconds of load before measuring.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="RandomForest, 1 round, short loads (smoke run).")
    parser.add_argument("--model", choices=["RandomForest", "LogisticRegression", "Churn"], help="Only this model.")
    parser.add_argument("--scenario", action="append", default=[], metavar="ROWSxC", help="Only these, e.g. 1x32 10000x1.")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from _results import write_results

    scenarios = [Scenario(1, 1), Scenario(1, 8), Scenario(1, 32), Scenario(100, 8), Scenario(10_000, 1)]
    # The categorical model's rows: its request check with text and bool columns, one record and bulk.
    categorical = [Scenario(1, 32), Scenario(10_000, 1)]
    models = build_models()
    if args.quick:
        args.seconds, args.warmup, args.rounds = 0.5, 0.2, 1
        scenarios = [Scenario(1, 1), Scenario(1, 32), Scenario(1_000, 1)]
        categorical = [Scenario(1, 32), Scenario(1_000, 1)]
        models = {name: models[name] for name in ("RandomForest", CATEGORICAL)}
    if args.model:
        models = {name: model for name, model in models.items() if name.startswith(args.model)}
    if args.scenario:
        scenarios = categorical = [Scenario(*map(int, spec.split("x"))) for spec in args.scenario]
    rows = []
    with tempfile.TemporaryDirectory(prefix="serving-bench-") as folder:
        for name, estimator in models.items():
            chosen = categorical if name == CATEGORICAL else scenarios
            dataset = DATASETS.get(name, breast_cancer)()
            measured = measure_model(name, estimator, dataset, chosen, args, Path(folder))
            rows += table_rows(name, measured, chosen)
    notes = (
        f"Median of {args.rounds} rounds, {args.seconds:g} s measured per contender after {args.warmup:g} s of warm-up; "
        "load client benchmarks/_load.py (aiohttp, own process); one worker per server; client and servers share the machine. "
        "ours = `mlops deploy` (swap proxy + BentoML service): /predict (JSON; concurrent requests share model calls), "
        "/arrow/predict (Arrow IPC), and /predict_batched (BentoML adaptive batching) for comparison. mlflow = `mlflow models serve --env-manager local -w 1`. "
        "bare = Starlette + uvicorn calling predict_proba (benchmarks/_bare_server.py)."
    )
    write_results("serving", rows, notes, quick=args.quick)


if __name__ == "__main__":
    main()
