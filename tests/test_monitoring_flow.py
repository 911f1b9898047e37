"""Continuous training through the monitoring flow: policy, labels, cooldown, alerts (real Prefect, MLflow)."""

from __future__ import annotations

import json

import pytest

from mlops import audit
from mlops.data import load_table
from mlops.prediction_log import PredictionLogWriter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _log(settings, frame, predictions, request_id="req"):
    writer = PredictionLogWriter(settings.predictions_dir)
    writer.log(request_id=request_id, model_name="m", model_version="1", inputs=frame.to_dict("records"), predictions=predictions)
    writer.close()


def _with(settings, **monitoring):
    return settings.model_copy(update={"monitoring": settings.monitoring.model_copy(update=monitoring)})


def _retrain_runs():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["retrain"])))


def test_monitoring_flow__repeated_drift_retrains_once_then_cools_down_and_alerts(tool_env, settings, receiver):
    from flows.monitoring import monitoring_flow
    from flows.training import training_flow

    url, received = receiver
    from mlops.config import AlertsConfig

    settings = _with(settings.model_copy(update={"alerts": AlertsConfig(webhook_url=url)}), retrain_without_labels=True)
    training_flow(settings)
    before = len(_retrain_runs())
    shifted = load_table(settings.data.current).drop(columns=["target"])
    _log(settings, shifted, [1] * len(shifted))
    first = monitoring_flow(settings)
    second = monitoring_flow(settings)
    assert first.decision.retrain and first.retrain is not None
    assert not second.decision.retrain and "cooldown" in second.decision.blocked_by
    assert len(_retrain_runs()) == before + 1, "exactly one retrain despite two detections"
    (audited,) = audit.read_audit(settings, kinds=("retrain",))  # one audit line: the retrain that ran
    assert (audited["version"], audited["run_id"]) == ("1", first.mlflow_run_id) and audited["reason"].startswith("retrain: drift")
    events = [alert["event"] for alert in received]
    assert events.count("drift_detected") == 2
    assert "gate_rejected" in events  # same data, same model: the gate keeps the champion
    import mlflow

    runs = mlflow.search_runs(experiment_names=[f"{settings.model.experiment}-monitoring"])
    assert len(runs) == 2 and set(runs["tags.mlops.model_version"]) == {"1"}


def test_monitoring_flow__quality_drop_with_labels_retrains_without_drift(tool_env, settings, tmp_path):
    from flows.monitoring import monitoring_flow
    from flows.training import training_flow

    training_flow(settings)
    rows = load_table(settings.data.training).sample(n=120, random_state=1)
    wrong = (1 - rows["target"]).tolist()  # the served model got every one wrong
    _log(settings, rows.drop(columns=["target"]), wrong, request_id="batch-1")
    labels = tmp_path / "labels.csv"
    labels.write_text("request_id,record,label\n" + "".join(f"batch-1,{i},{y}\n" for i, y in enumerate(rows["target"])))
    policy = _with(settings, quality_metric="accuracy", quality_floor=0.9, cooldown_minutes=0, retrain_data="reference+labeled")
    outcome = monitoring_flow(policy, labels_path=labels)
    assert not outcome.drift.drift_detected
    assert outcome.quality["accuracy"] == 0.0
    assert outcome.decision.retrain and outcome.retrain is not None
    assert any("accuracy" in trigger for trigger in outcome.decision.triggers)
    assert [run for run in _retrain_runs() if "trigger:quality" in run.tags]


def retrain_on_first_half(settings, labeled):
    """A user's retraining-data function (monitoring.retrain_data = module:function)."""
    frame = load_table(settings.data.training)
    path = settings.state_dir / "first-half.csv"
    frame.head(len(frame) // 2).to_csv(path, index=False)
    return path


def test_monitoring_flow__retrain_data_from_a_user_function(tool_env, settings):
    import json

    import mlflow

    from flows.monitoring import monitoring_flow

    shifted = load_table(settings.data.current).drop(columns=["target"])
    _log(settings, shifted, [1] * len(shifted))
    policy = _with(
        settings, retrain_data="test_monitoring_flow:retrain_on_first_half", cooldown_minutes=0, max_retrains_per_day=99
    )
    outcome = monitoring_flow(policy)
    assert outcome.retrain is not None
    run = mlflow.get_run(outcome.retrain.registered.run_id)
    rows = int(run.data.params["train_rows"]) + int(run.data.params["holdout_rows"])
    assert rows == len(load_table(settings.data.training)) // 2
    saved = json.loads(outcome.summary_path.read_text())
    assert saved["decision"]["retrain"] is True and saved["window"]["last_rows"] == 10_000


def test_monitoring_flow__no_drift_no_retrain(tool_env, settings):
    from flows.monitoring import monitoring_flow
    from mlops.prediction_log import RefusalLog

    rows = load_table(settings.data.training).sample(n=150, random_state=2)
    _log(settings, rows.drop(columns=["target"]), rows["target"].tolist())
    RefusalLog(settings.predictions_dir).log("/predict", ["mean_area"], "records[0].mean_area: 1e6 is outside [0, 2737]")
    outcome = monitoring_flow(settings)
    assert not outcome.drift.drift_detected
    assert outcome.decision.triggers == () and outcome.retrain is None
    assert outcome.validation.success and not outcome.validation.failures, "log metadata is not a contract column"
    # The 422 never reached the window: it is counted beside it, in the summary and on the MLflow run.
    assert outcome.refused.requests == 1 and outcome.refused.by_column == {"mean_area": 1}
    assert json.loads(outcome.summary_path.read_text())["refused"]["requests"] == 1
    from mlflow.tracking import MlflowClient

    assert MlflowClient().get_run(outcome.mlflow_run_id).data.metrics["refused_requests"] == 1


# --- Every task and dataset kind (tests/datasets.py) ---------------------------------------


@pytest.fixture
def dataset_settings(request, tmp_path, monkeypatch, mlflow_db_template):
    """Settings for one dataset of tests/datasets.py: its training file and drafted contract under tmp_path."""
    import shutil

    from datasets import write

    from mlops.config import load_settings
    from mlops.contract import draft_contract, write_contract
    from mlops.environment import tool_environment

    monkeypatch.chdir(tmp_path)
    train_path, current_path, spec = write(request.param, tmp_path / "data")
    contract_path = write_contract(
        draft_contract(load_table(train_path), spec.target, spec.name), tmp_path / "contracts" / f"{spec.name}.yaml"
    )
    data = {"training": str(train_path), "target": spec.target, "contract": str(contract_path),
            "suite": str(tmp_path / "expectations" / f"{spec.name}.json")}
    settings = load_settings(state_dir=tmp_path / "state", data=data)
    settings.state_dir.mkdir(parents=True)
    shutil.copy(mlflow_db_template, settings.state_dir / "mlflow.db")
    with tool_environment(settings):
        yield settings, load_table(current_path), spec


def _register_champion(settings, contract):
    """The dataset's champion, trained and registered by the training code, with its training snapshot."""
    from registered import register_fitted, set_champion
    from sklearn.linear_model import LogisticRegression, Ridge

    estimator = Ridge() if contract.task == "regression" else LogisticRegression(max_iter=2000)
    version, pipeline = register_fitted(settings, estimator, frame=load_table(settings.data.training), contract=contract)
    set_champion(settings, version)
    return pipeline


def _served_rows(frame, contract):
    """The rows the server accepts: features within their block-level ranges (the shift pushed some out)."""
    inside = frame.index == frame.index
    for column in contract.features:
        if column.type in ("int", "float") and column.min is not None and column.max is not None:
            values = frame[column.name]
            inside &= (values.isna() | values.between(column.min, column.max)).to_numpy()
    return frame[inside].reset_index(drop=True)


@pytest.mark.parametrize("dataset_settings", ["flowers", "wines", "churn", "prices"], indirect=True)
def test_monitoring_flow__every_task_measures_drift_and_quality_and_retrains_on_labeled_rows(dataset_settings):
    import json

    import mlflow

    from flows.monitoring import monitoring_flow
    from mlops.contract import load_contract
    from mlops.monitoring import drift_columns
    from mlops.training import feature_frame

    # Given a champion for the dataset, and its shifted batch served (in range), logged and labeled later
    settings, current, spec = dataset_settings
    contract = load_contract(settings.data.contract)
    champion = _register_champion(settings, contract)
    served = _served_rows(current, contract)
    features, categorical = drift_columns(contract)
    predictions = champion.predict(feature_frame(served, contract)).tolist()
    _log(settings, served[features].astype(object).where(served[features].notna(), None), predictions, "batch-1")
    labels = settings.state_dir / "labels.csv"
    truth = served[spec.target].tolist()
    labels.write_text("request_id,record,label\n" + "".join(f"batch-1,{i},{y}\n" for i, y in enumerate(truth)))
    # A floor the window's quality is past (the task's default metric: accuracy or rmse), and a low drift bar
    floor = 1.01 if spec.task == "classification" else 0.0
    policy = _with(settings, quality_metric=None, quality_floor=floor, drift_share_threshold=0.1, min_rows=10,
                   cooldown_minutes=0, max_retrains_per_day=99, retrain_data="reference+labeled")
    # When the monitoring flow runs
    outcome = monitoring_flow(policy, labels_path=labels)
    # Then the features only are compared, categories as categories, and the shifted columns drift
    assert [drift.column for drift in outcome.drift.columns] == features
    methods = {drift.column: drift.method for drift in outcome.drift.columns}
    assert all(methods[column] in ("chi-square p_value", "Z-test p_value") for column in categorical)
    shifted = {"flowers": "sepal length (cm)", "wines": "alcohol", "churn": "plan", "prices": "índice_masa"}
    assert shifted[spec.name] in outcome.drift.drifted_columns
    # And the quality has the task's metrics, on every labeled row, recorded with that count
    assert outcome.labels.labeled_rows == len(served) and outcome.labels.invalid == 0
    expected = {"rmse", "mae", "r2"} if spec.task == "regression" else {"accuracy", "balanced_accuracy", "f1"}
    assert expected <= set(outcome.quality)
    run = mlflow.get_run(outcome.mlflow_run_id)
    assert run.data.metrics["window_labeled_rows"] == len(served)
    metric = "rmse" if spec.task == "regression" else "accuracy"
    assert run.data.metrics[f"window_{metric}"] == pytest.approx(outcome.quality[metric])
    saved = json.loads(outcome.summary_path.read_text())
    assert saved["labels"]["labeled_rows"] == len(served) and saved["quality_metric"] == metric
    # And the retrain ran on the training file plus the older labeled rows, which passed the training gate
    assert any(metric in trigger for trigger in outcome.decision.triggers)
    assert outcome.retrain is not None, outcome.decision.explain()
    params = mlflow.get_run(outcome.retrain.registered.run_id).data.params
    trained_on = int(params["train_rows"]) + int(params["holdout_rows"])
    recent = round(0.3 * len(served))  # the newest 30 % of the labeled rows judge the retrain, never train it
    assert trained_on == len(load_table(settings.data.training)) + len(served) - recent
    assert outcome.retrain.decision.recent_rows == recent
    assert len(load_table(next((settings.state_dir / "retrain").glob("recent-eval-*.csv")))) == recent
    written = load_table(next((settings.state_dir / "retrain").glob("train-plus-labeled-*.csv")))
    assert list(written.columns) == list(load_table(settings.data.training).columns)
