"""The retraining policy: triggers, brakes, and the history read from a real Prefect server."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mlops.config import MonitoringConfig
from mlops.retraining import RETRAIN_TAG, RetrainHistory, decide_retrain, retrain_history

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=timezone.utc)
POLICY = MonitoringConfig(drift_share_threshold=0.3, min_rows=30, cooldown_minutes=60, max_retrains_per_day=3)


def decide(drift_share=0.5, quality=None, rows=100, history=RetrainHistory(), policy=POLICY):
    return decide_retrain(
        drift_share=drift_share, quality=quality, window_rows=rows, history=history, policy=policy, now=NOW
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
    assert datetime.now(timezone.utc) - history.last_started < timedelta(minutes=5)
