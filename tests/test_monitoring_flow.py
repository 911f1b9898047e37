"""Continuous training through the monitoring flow: policy, labels, cooldown, alerts (real Prefect, MLflow)."""

from __future__ import annotations

import pytest

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

    settings = settings.model_copy(update={"alerts": AlertsConfig(webhook_url=url)})
    training_flow(settings)
    before = len(_retrain_runs())
    shifted = load_table(settings.data.current).drop(columns=["target"])
    _log(settings, shifted, [1] * len(shifted))
    first = monitoring_flow(settings)
    second = monitoring_flow(settings)
    assert first.decision.retrain and first.retrain is not None
    assert not second.decision.retrain and "cooldown" in second.decision.blocked_by
    assert len(_retrain_runs()) == before + 1, "exactly one retrain despite two detections"
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

    rows = load_table(settings.data.training).sample(n=150, random_state=2)
    _log(settings, rows.drop(columns=["target"]), rows["target"].tolist())
    outcome = monitoring_flow(settings)
    assert not outcome.drift.drift_detected
    assert outcome.decision.triggers == () and outcome.retrain is None
    assert outcome.validation.success and not outcome.validation.failures, "log metadata is not a contract column"
