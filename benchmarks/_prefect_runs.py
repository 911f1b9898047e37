"""Read what Prefect recorded about flow runs: their task runs' start and end times.

Task run states reach the server as events, a moment after the flow returns, so the
reader polls until every expected task run has ended.
"""

from __future__ import annotations

import time

__all__ = ["finished_task_runs", "flow_run_start"]


def finished_task_runs(flow_run_ids: list[str], expected: int, timeout: float = 30.0) -> list:
    """The ended task runs of the flow runs, once ``expected`` of them have ended (or the timeout)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
        ended = [run for run in runs if run.end_time is not None]
        if len(ended) >= expected or time.monotonic() > deadline:
            return ended
        time.sleep(0.5)


def flow_run_start(flow_run_id: str) -> float:
    """When the flow run started, in Unix seconds."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).start_time.timestamp()
