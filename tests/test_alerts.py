"""Alerts delivered to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import pytest

from mlops.alerts import send_alert
from mlops.config import AlertsConfig


def test_send_alert__posts_the_event_as_json(receiver):
    url, received = receiver
    assert send_alert(AlertsConfig(webhook_url=url), "drift_detected", "19/30 columns drifted", {"share": 0.63})
    assert received[0]["event"] == "drift_detected"
    assert received[0]["details"] == {"share": 0.63}
    assert received[0]["message"] == "19/30 columns drifted"


def test_send_alert__events_not_subscribed_are_not_sent(receiver):
    url, received = receiver
    config = AlertsConfig(webhook_url=url, events=("flow_failed",))
    assert not send_alert(config, "drift_detected", "ignored")
    assert received == []


def test_send_alert__receiver_down_never_raises(caplog):
    from mlops.serving import free_port

    config = AlertsConfig(webhook_url=f"http://127.0.0.1:{free_port()}/hook?token=secret", timeout_seconds=2)
    assert not send_alert(config, "gate_rejected", "worse model")
    assert "not delivered" in caplog.text
    assert "secret" not in caplog.text, "webhook URLs can hold tokens: never log them"


def test_send_alert__unknown_event_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown alert event"):
        send_alert(AlertsConfig(), "coffee_ready", "")


@pytest.mark.slow
def test_send_alert__through_a_prefect_notification_block(receiver):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.testing.utilities import prefect_test_harness

    url, received = receiver
    with prefect_test_harness(server_startup_timeout=120):
        block = CustomWebhookNotificationBlock(
            name="test", url=url, method="POST", json_data={"text": "{{body}}"}
        )
        block.save("mlops-alerts")
        assert send_alert(AlertsConfig(prefect_block="custom-webhook/mlops-alerts"), "flow_failed", "training failed")
    assert received == [{"text": "[mlops] flow_failed: training failed"}]
