"""The loop that learns: logged predictions + stored labels → retrain on reference + window → gate on recent rows.

Real Prefect flow runs and a real MLflow store; the champion is weak (trained on a file
with a third of its labels flipped) and the served window is a drifted part of the data
(the largest tumours: in the contract's ranges, a different mix of every size feature).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlops.data import load_table
from mlops.prediction_log import PredictionLogWriter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _policy(settings, url=None, **monitoring):
    from mlops.config import AlertsConfig

    policy = {"drift_share_threshold": 0.1, "min_rows": 20, "cooldown_minutes": 0, "max_retrains_per_day": 99, **monitoring}
    update = {"monitoring": settings.monitoring.model_copy(update=policy)}
    if url:
        update["alerts"] = AlertsConfig(webhook_url=url)
    return settings.model_copy(update=update)


def _weak_champion(settings, tmp_path):
    from flows.training import training_flow

    weak = load_table(settings.data.training)
    flipped = weak.sample(frac=0.35, random_state=0).index
    weak.loc[flipped, "target"] = 1 - weak.loc[flipped, "target"]
    path = tmp_path / "weak.csv"
    weak.to_csv(path, index=False)
    return training_flow(settings, data_path=path)


def _serve_drifted_window(settings, requests=6):
    """The largest tumours, scored by the champion, logged as ``requests`` requests in time order."""
    import mlflow

    frame = load_table(settings.data.training)
    window = frame[frame["mean_radius"] > frame["mean_radius"].quantile(0.55)].reset_index(drop=True)
    model = mlflow.sklearn.load_model(f"models:/{settings.model.name}@champion")
    features = window.drop(columns=["target"])
    predictions = model.predict(features).tolist()
    writer = PredictionLogWriter(settings.predictions_dir)
    chunks = [range(i, min(i + len(window) // requests + 1, len(window))) for i in range(0, len(window), len(window) // requests + 1)]
    for n, rows in enumerate(chunks):
        writer.log(request_id=f"req-{n}", model_name=settings.model.name, model_version="1",
                   inputs=features.iloc[list(rows)].to_dict("records"), predictions=[predictions[i] for i in rows])
    writer.close()
    ids = [(f"req-{n}", k, window["target"].iloc[i]) for n, rows in enumerate(chunks) for k, i in enumerate(rows)]
    return window, pd.DataFrame(ids, columns=["request_id", "record", "label"])


def test_retrain_loop__labels_in_retrain_on_reference_plus_window_gate_on_recent_rows_promotes(tool_env, settings, tmp_path):
    import mlflow

    from flows.monitoring import monitoring_flow
    from mlops import labels
    from mlops.contract import load_contract

    # Given a weak champion, a drifted window it served, and the window's labels in the store
    first = _weak_champion(settings, tmp_path)
    window, truth = _serve_drifted_window(settings)
    target = load_contract(settings.data.contract).target_column
    added = labels.add_labels(truth, settings.labels_dir, target, source="test")
    assert added.accepted == len(window) and added.refused == 0
    # When monitoring runs with the default policy (reference+labeled, 30 % recent evaluation set),
    # the labeled rows weighing twice a training row
    outcome = monitoring_flow(_policy(settings, labeled_weight=2.0))
    # Then it measured quality from the store, retrained, and the gate judged on the recent rows
    assert outcome.drift.drift_detected and outcome.labels.labeled_rows == len(window)
    assert outcome.decision.retrain and outcome.retrain is not None, outcome.decision.explain()
    decision = outcome.retrain.decision
    recent = round(0.3 * len(window))
    assert decision.recent_rows == recent and decision.holdout_rows > 0
    assert decision.recent_champion_score is not None
    assert decision.recent_challenger_score > decision.recent_champion_score, decision.reason
    assert decision.promoted and "recent" in decision.reason and "(holdout:" in decision.reason
    # And it trained on the reference plus the older labeled rows only, never on the recent ones
    params = mlflow.get_run(outcome.retrain.registered.run_id).data.params
    trained_on = int(params["train_rows"]) + int(params["holdout_rows"])
    assert trained_on == len(load_table(settings.data.training)) + len(window) - recent
    # And the version records both scores, each set's size and its lineage
    version = mlflow.MlflowClient().get_model_version(settings.model.name, outcome.retrain.registered.version)
    tags = version.tags
    assert tags["mlops.gate.decision"] == "promoted" and tags["mlops.gate.recent_rows"] == str(recent)
    assert float(tags["mlops.gate.recent_champion_score"]) == pytest.approx(decision.recent_champion_score, abs=1e-6)
    assert tags["mlops.lineage.reference_fingerprint"] == first.data_fingerprint
    assert tags["mlops.lineage.monitoring_run_id"] == outcome.mlflow_run_id
    assert tags["mlops.lineage.labels_count"] == str(len(window))
    assert tags["mlops.lineage.labels_source"] == str(settings.labels_dir)
    assert tags["mlops.lineage.window_start"] <= tags["mlops.lineage.window_end"]
    assert tags["mlops.lineage.labeled_weight"] == "2"
    assert tags["mlops.lineage.reference_rows"] == str(len(load_table(settings.data.training)))
    run_tags = mlflow.get_run(outcome.retrain.registered.run_id).data.tags
    assert run_tags["mlops.lineage.monitoring_run_id"] == outcome.mlflow_run_id
    assert str(mlflow.MlflowClient().get_model_version_by_alias(settings.model.name, "champion").version) == "2"


def test_retrain_loop__drift_without_labels_does_not_retrain_and_alerts(tool_env, settings, tmp_path, receiver):
    from flows.monitoring import monitoring_flow
    from mlops.retraining import NO_LABELS

    url, received = receiver
    _weak_champion(settings, tmp_path)
    _serve_drifted_window(settings)
    outcome = monitoring_flow(_policy(settings, url))
    assert outcome.drift.drift_detected and outcome.retrain is None
    assert not outcome.decision.retrain and outcome.decision.blocked_by == NO_LABELS
    alert = next(alert for alert in received if alert["event"] == "retrain_needs_labels")
    assert "no new labeled rows: a retrain would reproduce the champion" in alert["message"]
    saved = json.loads(outcome.summary_path.read_text())
    assert saved["decision"]["blocked_by"] == NO_LABELS


def test_retrain_loop__auto_promote_off_leaves_the_challenger_waiting_until_promote(tool_env, settings, tmp_path, receiver):
    import mlflow
    from click.testing import CliRunner

    from flows.monitoring import monitoring_flow
    from mlops import labels, tracking
    from mlops.cli import cli
    from mlops.contract import load_contract

    # Given a weak champion, its labeled drifted window, and auto_promote off
    url, received = receiver
    _weak_champion(settings, tmp_path)
    _, truth = _serve_drifted_window(settings)
    labels.add_labels(truth, settings.labels_dir, load_contract(settings.data.contract).target_column)
    # When monitoring retrains
    outcome = monitoring_flow(_policy(settings, url, auto_promote=False))
    # Then the challenger passed the gate but waits, the champion stays, and someone is told
    decision = outcome.retrain.decision
    assert decision.waiting and not decision.promoted, decision.reason
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias(settings.model.name, "champion").version) == "1"
    version = outcome.retrain.registered.version
    assert client.get_model_version(settings.model.name, version).tags["mlops.gate.decision"] == "waiting"
    assert any(alert["event"] == "challenger_waiting" and f"mlops promote {version}" in alert["message"]
               for alert in received)
    # When someone approves it with `mlops promote VERSION`
    approved = CliRunner().invoke(
        cli, ["--state-dir", str(settings.state_dir), "promote", version, "--reason", "checked the recent rows"]
    )
    # Then it is champion, and who, when and why are recorded
    assert approved.exit_code == 0, approved.output
    assert str(client.get_model_version_by_alias(settings.model.name, "champion").version) == version
    audit = tracking.read_audit(settings)[-1]
    assert (audit["kind"], audit["champion"], audit["reason"]) == ("promote", version, "checked the recent rows")
    assert audit["by"] and audit["at"]
    tags = client.get_model_version(settings.model.name, version).tags
    assert tags["mlops.promotion.reason"] == "checked the recent rows" and tags["mlops.promotion.by"] == audit["by"]
