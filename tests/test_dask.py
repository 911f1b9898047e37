"""The training flow on a Dask cluster (``orchestration.task_runner: dask``): real flow runs, a real LocalCluster.

Its result must be the in-process runner's: the same best candidate, holdout metrics and trials.
The flows run on Prefect's ephemeral server, as ``mlops train`` does: the workers must report to it.
"""

from __future__ import annotations

import shutil
import time

import psutil
import pytest
from prefect_dask import DaskTaskRunner

from mlops.errors import ServiceUnavailable

CANDIDATES = {
    "classification": [
        {"name": "logreg", "estimator": "logistic_regression", "space": {"C": [0.1, 1.0]}},
        {"name": "forest", "estimator": "random_forest", "params": {"n_estimators": 20}, "space": {"max_depth": [3, None]}},
        {"name": "knn", "estimator": "sklearn.neighbors:KNeighborsClassifier", "space": {"n_neighbors": [5, 15]}},
    ],
    "regression": [
        {"name": "ridge", "estimator": "ridge", "space": {"alpha": [0.1, 10.0]}},
        {"name": "forest", "estimator": "random_forest", "params": {"n_estimators": 20}, "space": {"max_depth": [3, None]}},
    ],
}


@pytest.fixture
def project(request, settings, tmp_path, mlflow_db_template):
    """Settings with three candidates on the bundled data, or two on a dataset of tests/datasets.py."""
    from datasets import write

    from mlops.config import load_settings  # not mlops.load_settings: that binds MLflow for the rest of the test process
    from mlops.contract import draft_contract, write_contract
    from mlops.data import load_table

    if request.param == "breast_cancer":
        return load_settings(state_dir=settings.state_dir, model={"candidates": CANDIDATES["classification"]})
    train_path, _, spec = write(request.param, tmp_path / "data")
    contract = write_contract(draft_contract(load_table(train_path), spec.target, spec.name), tmp_path / f"{spec.name}.yaml")
    data = {"training": str(train_path), "target": spec.target, "contract": str(contract), "suite": str(tmp_path / "suite.json")}
    model = {"candidates": CANDIDATES[spec.task], "name": f"{spec.name}-model", "experiment": spec.name}
    return load_settings(state_dir=settings.state_dir, data=data, model=model)


def _train(settings, runner: str):
    """One training flow run on ``runner``: (flow run id, best candidate, holdout metrics, trials as MLflow logged them)."""
    from mlflow import MlflowClient

    import mlops

    settings = settings.model_copy(update={"orchestration": settings.orchestration.model_copy(update={"task_runner": runner})})
    flow = mlops.load_flow(settings, "training")
    assert isinstance(flow.task_runner, DaskTaskRunner) == (runner == "dask")
    outcome = flow(settings)
    client = MlflowClient()
    parent = client.get_run(outcome.registered.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    trials = sorted((run.info.run_name, run.data.params, run.data.metrics) for run in children)
    return outcome.flow_run_id, parent.data.params["estimator"], outcome.registered.metrics, trials


def _task_runs(flow_run_id: str, expected: int, timeout: float = 30.0) -> list:
    """The flow run's task runs, once ``expected`` of them have completed (their states arrive as events)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        if sum(run.state_name == "Completed" for run in runs) >= expected or time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def _dask_processes() -> list[str]:
    """This process's children that a Dask cluster starts: its workers (multiprocessing's spawned children)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:  # ended while we looked
            continue
        if "spawn_main" in command or "distributed" in command or "forkserver" in command:
            found.append(f"{child.pid}: {command}")
    return found


def _no_dask_processes(timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _dask_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.slow
@pytest.mark.parametrize("project", ["breast_cancer", "churn"], indirect=True)
def test_dask__same_best_candidate_metrics_and_trials_as_threads_and_no_worker_left(tool_env, project):
    # Given a search of several candidates, trained once in the flow's process (threads)
    candidates = project.model.candidates
    _, best, metrics, trials = _train(project, "threads")
    assert len(trials) == 2 * len(candidates)

    # When the same search runs on a two-worker local Dask cluster
    flow_run_id, dask_best, dask_metrics, dask_trials = _train(project, "dask")

    # Then the same candidate wins with the same holdout metrics, every trial alike
    assert dask_best == best
    assert dask_metrics.keys() == metrics.keys()
    assert all(dask_metrics[name] == pytest.approx(metrics[name], abs=1e-12) for name in metrics)
    assert dask_trials == trials
    # and Prefect shows one task run per candidate's search
    runs = _task_runs(flow_run_id, expected=len(candidates))
    searches = [run for run in runs if run.name.startswith("search_candidate")]
    assert len(searches) == len(candidates) and all(run.state_name == "Completed" for run in searches)
    assert any(run.name.startswith("pick_best") for run in runs)
    # and the cluster's processes are gone with the flow run
    assert _no_dask_processes() == []


def test_pick_best__a_tie_goes_to_the_first_candidate_in_order(settings):
    from mlops.data import load_table
    from mlops.training import Candidate, pick_best, search_candidate, split_holdout

    # Given two candidates with the same estimator and space (the same cv score)
    split = split_holdout(load_table(settings.data.training), settings.data.target, settings.model.test_size, settings.model.seed)
    estimator = Candidate("first", _logistic(), {"C": [1.0]}), Candidate("second", _logistic(), {"C": [1.0]})
    first, second = (search_candidate(candidate, split, settings.model) for candidate in estimator)
    assert first.best_score == second.best_score

    # When the best is picked, in either order
    # Then the earlier candidate wins, and every trial is kept in the candidates' order
    assert pick_best([first, second], split, settings.model).best.params["estimator"] == "first"
    result = pick_best([second, first], split, settings.model)
    assert result.best.params["estimator"] == "second"
    assert [trial.candidate for trial in result.trials] == ["second", "first"]


def _logistic():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=1000)


def test_dask__an_address_nothing_listens_at_is_named_with_the_fix(settings):
    import mlops
    from mlops.config import load_settings

    # Given a scheduler address nothing listens at
    bad = load_settings(state_dir=settings.state_dir, orchestration={"task_runner": "dask", "dask_address": "tcp://127.0.0.1:9"})

    # When the flow is loaded, then the error names the address, the setting and the fix
    with pytest.raises(ServiceUnavailable) as raised:
        mlops.load_flow(bad, "training")
    message = str(raised.value)
    assert "tcp://127.0.0.1:9" in message and "orchestration.dask_address" in message and "dask scheduler" in message


@pytest.mark.slow
def test_dask__mlops_train_with_a_bad_address_exits_4_without_a_traceback(tmp_path):
    from test_cli import run_mlops

    # Given `mlops train` on a cluster address nothing listens at
    env = {"MLOPS_ORCHESTRATION__TASK_RUNNER": "dask", "MLOPS_ORCHESTRATION__DASK_ADDRESS": "tcp://127.0.0.1:9"}
    result = run_mlops("train", state_dir=tmp_path / "state", timeout=120, **env)

    # Then it stops with exit 4 (a service unavailable), the address and the fix in one message
    assert result.returncode == 4, result.stderr
    assert "tcp://127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
