"""The retraining policy: triggers, brakes, and the history read from a real Prefect server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from mlops.config import MonitoringConfig
from mlops.retraining import RETRAIN_TAG, RetrainHistory, decide_retrain, retrain_history, watched_metric

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
POLICY = MonitoringConfig(drift_share_threshold=0.3, min_rows=30, cooldown_minutes=60, max_retrains_per_day=3)


def decide(drift_share=0.5, quality=None, rows=100, history=RetrainHistory(), policy=POLICY, **given):
    return decide_retrain(
        drift_share=drift_share, quality=quality, window_rows=rows, history=history, policy=policy, now=NOW, **given
    )


def test_decide_retrain__drift_past_threshold_retrains():
    decision = decide(drift_share=0.5)
    assert decision.retrain and "drift share 0.50" in decision.explain()


def test_decide_retrain__no_drift_no_retrain():
    decision = decide(drift_share=0.1)
    assert not decision.retrain and decision.triggers == ()


def test_decide_retrain__quality_below_floor_retrains_without_drift():
    policy = POLICY.model_copy(update={"quality_metric": "accuracy", "quality_floor": 0.9})
    decision = decide(drift_share=0.0, quality=0.8, policy=policy)
    assert decision.retrain and "accuracy 0.8000 past its floor" in decision.explain()


def test_decide_retrain__error_metric_floor_is_a_ceiling():
    policy = POLICY.model_copy(update={"quality_metric": "rmse", "quality_floor": 50.0})
    assert decide(drift_share=0.0, quality=60.0, policy=policy).retrain
    assert not decide(drift_share=0.0, quality=40.0, policy=policy).retrain


@pytest.mark.parametrize(
    ("metric", "floor", "worse", "better"),
    [("rmse", 50.0, 60.0, 40.0), ("mae", 30.0, 31.0, 29.0), ("r2", 0.4, 0.2, 0.6),
     ("balanced_accuracy", 0.8, 0.7, 0.9), ("f1", 0.8, 0.5, 0.85)],
)
def test_decide_retrain__each_metric_goes_its_own_way(metric, floor, worse, better):
    policy = POLICY.model_copy(update={"quality_metric": metric, "quality_floor": floor})
    task = "regression" if metric in ("rmse", "mae", "r2") else "classification"
    fired = decide(drift_share=0.0, quality=worse, policy=policy, task=task)
    assert fired.retrain and f"{metric} {worse:.4f} past its floor" in fired.explain()
    assert not decide(drift_share=0.0, quality=better, policy=policy, task=task).triggers


def test_decide_retrain__no_metric_given_watches_the_tasks_default():
    # Given a policy built directly (quality_metric None), with a floor for a regression error
    policy = MonitoringConfig(quality_floor=50.0, min_rows=30)
    assert policy.quality_metric is None
    assert watched_metric(policy, "regression") == "rmse" and watched_metric(policy, "classification") == "accuracy"
    # When rmse on the window is 60 (worse: higher), then the regression check retrains
    decision = decide(drift_share=0.0, quality=60.0, policy=policy, task="regression")
    assert decision.retrain and "rmse 60.0000 past its floor 50.0000 (higher is worse)" in decision.explain()
    # And the same value for a classifier reads as accuracy 60 above a floor of 50: nothing to do
    assert not decide(drift_share=0.0, quality=60.0, policy=policy).triggers


def test_decide_retrain__quality_on_too_few_labeled_rows_does_not_retrain():
    policy = POLICY.model_copy(update={"quality_metric": "accuracy", "quality_floor": 0.9})
    decision = decide(drift_share=0.0, quality=0.5, policy=policy, labeled_rows=5)
    assert not decision.retrain and "5 labeled rows" in decision.blocked_by
    assert decide(drift_share=0.0, quality=0.5, policy=policy, labeled_rows=30).retrain
    assert decide(drift_share=0.6, quality=0.5, policy=policy, labeled_rows=5).retrain, "drift alone suffices"


@pytest.mark.parametrize(
    ("history", "rows", "brake"),
    [
        (RetrainHistory(), 10, "fewer than monitoring.min_rows"),
        (RetrainHistory(active=1), 100, "already running or queued"),
        (RetrainHistory(last_started=NOW - timedelta(minutes=10), started_last_day=1), 100, "cooldown"),
        (RetrainHistory(last_started=NOW - timedelta(hours=2), started_last_day=3), 100, "max_retrains_per_day"),
    ],
)
def test_decide_retrain__brakes_hold_and_say_why(history, rows, brake):
    decision = decide(history=history, rows=rows)
    assert not decision.retrain
    assert brake in decision.blocked_by
    assert "drift share" in decision.explain()


def test_decide_retrain__cooldown_elapsed_allows_again():
    history = RetrainHistory(last_started=NOW - timedelta(minutes=61), started_last_day=1)
    assert decide(history=history).retrain


def test_decide_retrain__switched_off_never_retrains():
    decision = decide(policy=POLICY.model_copy(update={"retrain_on_drift": False}))
    assert not decision.retrain and "off" in decision.blocked_by


@pytest.mark.slow
def test_retrain_history__counts_tagged_flow_runs_from_prefect():
    from prefect import flow, tags
    from prefect.testing.utilities import prefect_test_harness

    @flow
    def pretend_retrain() -> int:
        return 1

    with prefect_test_harness(server_startup_timeout=120):
        assert retrain_history() == RetrainHistory()
        pretend_retrain()  # untagged: not a retrain
        with tags(RETRAIN_TAG):
            pretend_retrain()
            pretend_retrain()
        history = retrain_history()
    assert history.started_last_day == 2
    assert history.active == 0
    assert datetime.now(UTC) - history.last_started < timedelta(minutes=5)


def test_decide_retrain__drift_without_labeled_rows_does_not_retrain_unless_allowed():
    from mlops.retraining import NO_LABELS

    held = decide(drift_share=0.5, labeled_rows=0)
    assert not held.retrain and held.blocked_by == NO_LABELS and "a retrain would reproduce the champion" in held.explain()
    assert decide(drift_share=0.5, labeled_rows=40).retrain
    assert decide(drift_share=0.5, labeled_rows=0, policy=POLICY.model_copy(update={"retrain_without_labels": True})).retrain
    users = POLICY.model_copy(update={"retrain_data": "my_data:rows"})
    assert decide(drift_share=0.5, labeled_rows=0, policy=users).retrain, "the user's source is not held back"


def test_split_recent__the_newest_share_is_held_out_in_time_order():
    import pandas as pd

    from mlops.retraining import split_recent

    rows = pd.DataFrame({"timestamp": [f"2026-12-01T10:00:{s:02d}" for s in (5, 1, 9, 3, 7, 2, 8, 4, 6, 0)],
                         "label": range(10)})
    train, recent = split_recent(rows, 0.3)
    assert recent["timestamp"].tolist() == ["2026-12-01T10:00:07", "2026-12-01T10:00:08", "2026-12-01T10:00:09"]
    assert len(train) == 7 and train["timestamp"].max() < recent["timestamp"].min()
    train, recent = split_recent(rows, 0.3, rows=2)
    assert train["timestamp"].tolist() == ["2026-12-01T10:00:05", "2026-12-01T10:00:06"] and len(recent) == 3
    assert len(split_recent(rows.head(1), 0.3)[1]) == 0, "a single row is trained on, not held out"
    train, recent = split_recent(rows, 0.3, train_share=0.5)
    assert train["timestamp"].tolist() == [f"2026-12-01T10:00:0{s}" for s in (3, 4, 5, 6)] and len(recent) == 3
