"""Where a flow's tasks run (``orchestration.task_runner``): Prefect's thread pool, or a Dask cluster.

Prefect fixes a flow's task runner when the function is decorated, so the project's flow
gets the configured one where it is loaded (:func:`mlops.project.load_flow`)::

    flow = with_task_runner(training_flow, settings)   # orchestration.task_runner: dask
    flow(settings)                                     # each candidate's search on a Dask worker

With ``dask_address`` the tasks go to that running scheduler; without it a
``LocalCluster`` of worker processes on 127.0.0.1 is started for the flow run and
stopped when it ends (prefect-dask's ``DaskTaskRunner`` owns it).
"""

from __future__ import annotations

import sys
from typing import Any

import cloudpickle
from prefect import Flow, get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner
from prefect_dask import DaskTaskRunner

from mlops import processes
from mlops.config import Settings
from mlops.errors import ServiceUnavailable

__all__ = ["FlowApiDaskTaskRunner", "check_scheduler", "task_runner", "with_task_runner"]

SCHEDULER_TIMEOUT_SECONDS = 5.0


class FlowApiDaskTaskRunner(DaskTaskRunner):
    """prefect-dask's runner, its workers reporting to the flow's Prefect API even when that is an ephemeral server.

    Why: a task run carries the flow's Prefect settings to its worker. Without an API URL in
    them (Prefect's default, an ephemeral server), each worker would start a server of its own
    on the same database, and leave it behind when the cluster stops it.
    """

    def __enter__(self) -> FlowApiDaskTaskRunner:
        if not PREFECT_API_URL.value():
            api_url = str(get_client(sync_client=True).api_url).rstrip("/")
            self._exit_stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
        super().__enter__()
        return self


def task_runner(settings: Settings) -> TaskRunner[Any] | None:
    """The configured task runner; None for ``threads``: the flow keeps its own (Prefect's ThreadPoolTaskRunner)."""
    config = settings.orchestration
    if config.task_runner == "threads":
        return None
    if config.dask_address:
        check_scheduler(config.dask_address)
        return FlowApiDaskTaskRunner(address=config.dask_address)
    cluster = {
        "n_workers": config.dask_workers,
        "threads_per_worker": config.dask_threads_per_worker,
        "processes": True,
        "host": "127.0.0.1",  # the scheduler and the workers listen on loopback only
        # The scheduler's HTTP endpoint (health, metrics) on a free loopback port: with None it still takes 8787,
        # on which two flow runs' clusters collide.
        "dashboard_address": "127.0.0.1:0",
    }
    return FlowApiDaskTaskRunner(cluster_kwargs=cluster)


def with_task_runner(flow: Flow[Any, Any], settings: Settings) -> Flow[Any, Any]:
    """``flow`` on the configured task runner (the same flow for ``threads``)."""
    runner = task_runner(settings)
    if runner is None:
        return flow
    module = sys.modules.get(flow.fn.__module__)
    if module is not None and module.__name__.startswith("_mlops_default."):
        # The framework's default flow is imported under a private name that workers cannot import: send its code.
        cloudpickle.register_pickle_by_value(module)
    return flow.with_options(task_runner=runner)


def check_scheduler(address: str, timeout: float = SCHEDULER_TIMEOUT_SECONDS) -> None:
    """Fail early, and say what to do, when nothing listens at the scheduler's address."""
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    problem = processes.connection_problem(host, int(port), timeout)
    if problem is not None:
        raise ServiceUnavailable(
            f"No Dask scheduler answers at {address} (orchestration.dask_address): {problem}. Start one there "
            "(`dask scheduler`), fix the address, or remove orchestration.dask_address to run on a local cluster."
        )
