"""The tools' environment: one-shot flow runs skip Prefect's run heartbeats."""

from __future__ import annotations

from mlops.environment import one_shot_flow_runs


def test_one_shot_flow_runs__turns_heartbeats_off_inside_and_restores_them(tool_env):
    from prefect.settings import get_current_settings

    before = get_current_settings().flows.heartbeat_frequency
    with one_shot_flow_runs():
        inside = get_current_settings().flows.heartbeat_frequency
    assert before is not None and inside is None
    assert get_current_settings().flows.heartbeat_frequency == before


def test_one_shot_flow_runs__keeps_heartbeats_the_user_asked_for(tool_env, monkeypatch):
    from prefect.settings import get_current_settings

    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with one_shot_flow_runs():
        assert get_current_settings().flows.heartbeat_frequency is not None
