"""From laptop to servers by configuration alone: named profiles and ``mlops stack`` on real engines.

The stack is the real thing: Debian's PostgreSQL (initdb'd here), ``mlflow server`` on it
with artifacts served over HTTP, ``prefect server start`` on it and a process worker. A
user's project (the churn table: text labels, imbalance, text and bool columns, an id) is
trained, gated, promoted and rolled back through a ``staging`` profile pointing at them,
with nothing but ``--env staging`` on the command line.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from datasets import write

from mlops import processes

# One stack for the module: its tests run in one test process (`make test` distributes with --dist loadgroup).
pytestmark = pytest.mark.xdist_group("stack")

MLOPS = Path(sys.executable).with_name("mlops")
POSTGRES_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
needs_postgres = pytest.mark.skipif(
    not POSTGRES_BIN and not shutil.which("initdb"),
    reason="PostgreSQL is not installed: `make test` installs it (apt-get install postgresql)",
)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for one in sockets:
        one.bind(("127.0.0.1", 0))
    ports = [one.getsockname()[1] for one in sockets]
    for one in sockets:
        one.close()
    return ports


def _mlops(project: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLOPS_", "MLFLOW_", "PREFECT_"))}
    return subprocess.run(
        [str(MLOPS), "--log-format", "text", *args], capture_output=True, text=True, cwd=project, env=environment, timeout=timeout
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stdout + result.stderr
    return " ".join(result.stdout.split())


def _project(folder: Path, ports: dict[str, int]) -> Path:
    """A user's project whose mlops.yaml has a ``staging`` profile on the stack's servers."""
    folder.mkdir(parents=True)
    train, _, spec = write("churn", folder)
    (folder / "mlops.yaml").write_text(
        f"data:\n  training: {train.name}\n  target: {spec.target}\n"
        f"stack:\n  postgres_port: {ports['postgres']}\n  mlflow_port: {ports['mlflow']}\n  prefect_port: {ports['prefect']}\n"
        "environments:\n"
        "  staging:\n"
        f"    tracking_uri: http://127.0.0.1:{ports['mlflow']}\n"
        f"    prefect_api_url: http://127.0.0.1:{ports['prefect']}/api\n"
        "    model:\n      name: churn-staging\n"
        "    schedules:\n      work_pool: mlops\n"
        "  production:\n"
        f"    tracking_uri: http://127.0.0.1:{ports['mlflow']}\n"
        "    model:\n      name: churn-production\n"
        "  nowhere:\n    tracking_uri: http://127.0.0.1:9/\n"
    )
    _ok(_mlops(folder, "contract", "draft", train.name, "--write"))
    return folder


@pytest.fixture(scope="module")
def stack_project() -> Iterator[Path]:
    """A project and its stack, up for the module; the folder searchable by PostgreSQL's own user (tests run as root)."""
    base = Path(tempfile.mkdtemp(prefix="mlops-stack-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    base.chmod(0o711)
    postgres, mlflow, prefect = _free_ports(3)
    project = _project(base / "project", {"postgres": postgres, "mlflow": mlflow, "prefect": prefect})
    try:
        yield project
    finally:
        _mlops(project, "stack", "down")
        shutil.rmtree(base, ignore_errors=True)


@needs_postgres
@pytest.mark.slow
def test_stack__train_gate_promote_and_rollback_run_on_postgres_through_a_profile(stack_project: Path):
    up = _ok(_mlops(stack_project, "stack", "up"))
    assert all(f"{name} up" in up for name in ("postgres", "mlflow", "prefect", "worker")), up

    first = _ok(_mlops(stack_project, "--env", "staging", "train"))
    second = _ok(_mlops(stack_project, "--env", "staging", "train"))
    assert "Registered churn-staging v1" in first and "promoted to champion" in first
    assert "Registered churn-staging v2" in second  # the gate decided, on the server's registry
    card = _ok(_mlops(stack_project, "--env", "staging", "report", "--version", "2"))
    assert "# churn-staging v2" in card and "## Gate decision" in card  # fetched from the server: no shared disk
    unknown = _mlops(stack_project, "--env", "staging", "report", "--version", "9")
    assert unknown.returncode == 2 and "has no version 9" in unknown.stderr, unknown.stderr
    _ok(_mlops(stack_project, "--env", "staging", "promote", "2", "--force", "--reason", "staging check"))
    _ok(_mlops(stack_project, "--env", "staging", "rollback", "--reason", "staging check"))

    config = json.loads(_ok(_mlops(stack_project, "env", "show", "staging")).replace(" ", "") or "{}")
    server = config["tracking_uri"]
    versions = httpx.get(f"{server}/api/2.0/mlflow/registered-models/get", params={"name": "churn-staging"}, timeout=10).json()
    aliases = {alias["alias"]: alias["version"] for alias in versions["registered_model"]["aliases"]}
    assert aliases["champion"] == "1" and aliases["previous"] == "2", aliases
    # The store is PostgreSQL, the artifacts went over HTTP into the stack's folder, not the client's.
    state = stack_project / ".mlops"
    assert not (state / "mlflow.db").exists() and not (state / "mlartifacts").exists()
    assert list((state / "stack" / "mlartifacts").rglob("MLmodel"))
    rows = _psql(stack_project, "mlflow", "SELECT count(*) FROM model_versions WHERE name = 'churn-staging'")
    assert rows == "2"
    # The flow runs are on the Prefect server (its database on the same PostgreSQL).
    runs = httpx.post(f"{config['prefect_api_url']}/flow_runs/filter", json={}, timeout=10).json()
    assert sum(run["state_type"] == "COMPLETED" for run in runs) >= 2


@needs_postgres
@pytest.mark.slow
def test_stack__up_again_keeps_the_servers_status_lists_them_and_down_stops_every_process(stack_project: Path):
    _ok(_mlops(stack_project, "stack", "up"))
    record = json.loads((stack_project / ".mlops" / "stack" / "stack.json").read_text())
    again = _ok(_mlops(stack_project, "stack", "up"))
    assert all(f"pid {server['pid']}" in again for server in record), "a running stack is not restarted"
    status = _ok(_mlops(stack_project, "stack", "status"))
    assert status.count(" up ") == 4, status
    trees = [(server["pid"], server["started"], processes.descendants(server["pid"])) for server in record]

    _ok(_mlops(stack_project, "stack", "down"))

    assert not any(processes.alive(pid, started) or processes.left(family) for pid, started, family in trees)
    down = _mlops(stack_project, "stack", "status")
    assert down.returncode == 4 and "not running" in down.stdout
    nowhere = _mlops(stack_project, "--env", "staging", "train")
    assert nowhere.returncode == 4 and "does not answer" in nowhere.stderr and "Traceback" not in nowhere.stderr


@needs_postgres
@pytest.mark.slow
def test_promote_to__a_blessed_version_moves_local_to_staging_to_production_through_each_gate(stack_project: Path):
    _ok(_mlops(stack_project, "stack", "up"))
    _ok(_mlops(stack_project, "--env", "staging", "train"))  # staging has a champion already
    _ok(_mlops(stack_project, "train"))  # local: SQLite under the state folder, its own registry
    to_staging = _ok(_mlops(stack_project, "promote", "1", "--to", "staging", "--force", "--reason", "release 1"))
    server = json.loads(_ok(_mlops(stack_project, "env", "show", "staging")).replace(" ", ""))["tracking_uri"]
    staging = httpx.get(f"{server}/api/2.0/mlflow/registered-models/alias", params={"name": "churn-staging", "alias": "champion"}, timeout=10)
    champion = staging.json()["model_version"]
    tags = {tag["key"]: tag["value"] for tag in champion["tags"]}
    assert "copied from local v1" in to_staging and tags["mlops.promoted_from"] == "local:churn-classifier/1", tags

    refused = _mlops(stack_project, "--env", "staging", "promote", str(int(champion["version"]) - 1), "--to", "production")
    to_production = _ok(_mlops(stack_project, "--env", "staging", "promote", champion["version"], "--to", "production"))

    assert refused.returncode == 2 and "not the champion of 'staging'" in refused.stderr, refused.stderr
    assert "champion → v1" in to_production  # production had none: its gate promotes the first
    audit = (stack_project / ".mlops" / "audit.jsonl").read_text()
    assert f"from staging:churn-staging/{champion['version']}" in audit and "from local:churn-classifier/1: release 1" in audit


@needs_postgres
@pytest.mark.slow
def test_stack__two_trainings_at_once_on_the_servers_both_register_and_the_gate_decides_each(stack_project: Path):
    _ok(_mlops(stack_project, "stack", "up"))
    server = json.loads(_ok(_mlops(stack_project, "env", "show", "staging")).replace(" ", ""))["tracking_uri"]
    search = f"{server}/api/2.0/mlflow/model-versions/search"
    before = httpx.get(search, params={"filter": "name='churn-staging'"}, timeout=10).json().get("model_versions", [])
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLOPS_", "MLFLOW_", "PREFECT_"))}
    command = [str(MLOPS), "--log-format", "text", "--env", "staging", "train"]
    runs = [
        subprocess.Popen(command, cwd=stack_project, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # noqa: S603
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=600) for run in runs]

    assert [run.returncode for run in runs] == [0, 0], outputs
    after = httpx.get(search, params={"filter": "name='churn-staging'"}, timeout=10).json()["model_versions"]
    new = [version for version in after if version["version"] not in {old["version"] for old in before}]
    assert len(new) == 2
    for version in new:
        tags = {tag["key"]: tag["value"] for tag in version.get("tags", [])}
        assert tags.get("mlops.status") == "complete" and tags.get("mlops.gate.decision") in ("promoted", "rejected"), tags
    aliases = httpx.get(f"{server}/api/2.0/mlflow/registered-models/get", params={"name": "churn-staging"}, timeout=10).json()
    assert sum(alias["alias"] == "champion" for alias in aliases["registered_model"]["aliases"]) == 1


_RUN_THE_DEPLOYMENT = """
import sys
from prefect.deployments import run_deployment
run = run_deployment("scheduled-training/scheduled-training", timeout=600)
print(run.state.type.value, run.state.message or "")
"""


@needs_postgres
@pytest.mark.slow
def test_stack__schedule_registers_on_the_work_pool_and_the_worker_runs_training_to_the_gate(stack_project: Path):
    _ok(_mlops(stack_project, "stack", "up"))
    scheduled = _ok(_mlops(stack_project, "--env", "staging", "schedule"))
    assert "on work pool 'mlops'" in scheduled, scheduled
    api = json.loads(_ok(_mlops(stack_project, "env", "show", "staging")).replace(" ", ""))["prefect_api_url"]
    deployments = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    assert {d["name"] for d in deployments if d["work_pool_name"] == "mlops"} >= {"scheduled-training", "scheduled-monitoring"}

    server = json.loads(_ok(_mlops(stack_project, "env", "show", "staging")).replace(" ", ""))["tracking_uri"]
    search = f"{server}/api/2.0/mlflow/model-versions/search"
    before = httpx.get(search, params={"filter": "name='churn-staging'"}, timeout=10).json().get("model_versions", [])
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLOPS_", "MLFLOW_", "PREFECT_"))}
    ran = subprocess.run(  # noqa: S603 — a trigger as Prefect's UI or API would send it; the stack's worker runs it
        [sys.executable, "-c", _RUN_THE_DEPLOYMENT], capture_output=True, text=True, timeout=700,
        env={**environment, "PREFECT_API_URL": api},
    )  # fmt: skip
    assert ran.stdout.startswith("COMPLETED"), ran.stdout + ran.stderr
    found = httpx.get(search, params={"filter": "name='churn-staging'"}, timeout=10).json()
    newest = max(found["model_versions"], key=lambda version: int(version["creation_timestamp"]))
    tags = {tag["key"]: tag["value"] for tag in newest.get("tags", [])}
    assert tags.get("mlops.status") == "complete", tags  # the gate decided on the version the worker trained
    assert tags.get("mlops.gate.decision") in ("promoted", "rejected"), tags
    assert len(found["model_versions"]) == len(before) + 1  # one training, run by the worker


_HOLD_THE_LOCK = """
import json, sys, time
from mlops.project import load_settings
from mlops.tracking import registry_lock
settings = load_settings(project=sys.argv[1], state_dir=sys.argv[2], environment=sys.argv[3])
with registry_lock(settings):
    began = time.time()
    time.sleep(3)
    ended = time.time()
print(json.dumps([began, ended]))
"""


@needs_postgres
@pytest.mark.slow
@pytest.mark.parametrize("profile", ["staging", "database"])
def test_stack__the_registry_lock_holds_across_machines_two_processes_take_turns(stack_project: Path, profile: str, tmp_path: Path):
    """Two processes with state folders of their own (two machines: no shared lock file) never hold it at once.

    ``staging`` has a Prefect server (its global concurrency limit); ``database`` points
    straight at the PostgreSQL store (an advisory lock).
    """
    _ok(_mlops(stack_project, "stack", "up"))
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLOPS_", "MLFLOW_", "PREFECT_"))}
    if profile == "database":
        record = json.loads((stack_project / ".mlops" / "stack" / "stack.json").read_text())
        port = next(server["port"] for server in record if server["name"] == "postgres")
        password = (stack_project / ".mlops" / "stack" / "postgres.password").read_text().strip()
        environment["MLOPS_TRACKING_URI"] = f"postgresql://mlops:{password}@127.0.0.1:{port}/mlflow"
    holders = [
        subprocess.Popen(  # noqa: S603
            [sys.executable, "-c", _HOLD_THE_LOCK, str(stack_project), str(tmp_path / f"machine-{n}"), "staging" if profile == "staging" else "local"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
        )
        for n in (1, 2)
    ]  # fmt: skip
    outputs = [holder.communicate(timeout=300) for holder in holders]
    assert all(holder.returncode == 0 for holder in holders), outputs
    (first_began, first_ended), (second_began, second_ended) = sorted(json.loads(out.strip().splitlines()[-1]) for out, _ in outputs)
    assert second_began >= first_ended, "both processes held the registry lock at the same time"


def _psql(project: Path, database: str, query: str) -> str:
    import psycopg

    record = json.loads((project / ".mlops" / "stack" / "stack.json").read_text())
    port = next(server["port"] for server in record if server["name"] == "postgres")
    password = (project / ".mlops" / "stack" / "postgres.password").read_text().strip()
    with psycopg.connect(f"host=127.0.0.1 port={port} user=mlops dbname={database}", password=password) as db:
        return str(db.execute(query).fetchone()[0])  # type: ignore[index]


# --- refusals: nothing starts, nothing is written -------------------------------------------


@needs_postgres
def test_stack__a_taken_port_is_refused_before_anything_starts(tmp_path: Path):
    postgres, mlflow, prefect = _free_ports(3)
    project = tmp_path / "project"
    project.mkdir()
    (project / "mlops.yaml").write_text(f"stack:\n  postgres_port: {postgres}\n  mlflow_port: {mlflow}\n  prefect_port: {prefect}\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", mlflow))
        taken.listen()
        result = _mlops(project, "stack", "up")
    assert result.returncode == 2, result.stderr
    assert f"Port {mlflow}" in result.stderr and "stack.mlflow_port" in result.stderr and "Traceback" not in result.stderr
    assert not (project / ".mlops" / "stack" / "postgres").exists()


@needs_postgres
@pytest.mark.slow
def test_stack__sigterm_while_it_starts_stops_every_server_it_started():
    base = Path(tempfile.mkdtemp(prefix="mlops-stack-", dir="/var/tmp" if Path("/var/tmp").is_dir() else None))
    base.chmod(0o711)
    postgres, mlflow, prefect = _free_ports(3)
    (base / "mlops.yaml").write_text(f"stack:\n  postgres_port: {postgres}\n  mlflow_port: {mlflow}\n  prefect_port: {prefect}\n")
    environment = {key: value for key, value in os.environ.items() if not key.startswith(("MLOPS_", "MLFLOW_", "PREFECT_"))}
    try:
        up = subprocess.Popen(  # noqa: S603
            [str(MLOPS), "stack", "up"], cwd=base, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        log = base / ".mlops" / "logs" / "stack-mlflow.log"
        deadline = time.monotonic() + 120
        while not log.exists() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # PostgreSQL runs; the MLflow server is starting
        started = {pid for pid in processes.descendants(up.pid)}
        up.send_signal(signal.SIGTERM)
        _, stderr = up.communicate(timeout=120)

        assert up.returncode != 0 and "Traceback" not in stderr, stderr
        assert not processes.left(started), "a server outlived the interrupted `mlops stack up`"
        assert not any(_port_taken(port) for port in (postgres, mlflow, prefect))
        assert not (base / ".mlops" / "stack" / "stack.json").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_stack__no_postgresql_binaries_says_how_to_install_them(tmp_path: Path):
    (tmp_path / "mlops.yaml").write_text(f"stack:\n  postgres_bin: {tmp_path / 'nowhere'}\n")
    result = _mlops(tmp_path, "stack", "up")
    assert result.returncode == 2 and "apt-get install postgresql" in result.stderr and "Traceback" not in result.stderr


def test_env__profiles_are_listed_shown_with_secrets_masked_and_an_unknown_one_is_refused(tmp_path: Path):
    (tmp_path / "mlops.yaml").write_text(
        "environments:\n  staging:\n    tracking_uri: postgresql://mlops:s3cr3t-pw@127.0.0.1:1/mlflow\n    serving: {port: 3100}\n"
    )
    listed = _ok(_mlops(tmp_path, "--env", "staging", "env", "list"))
    shown = _ok(_mlops(tmp_path, "env", "show", "staging"))
    unknown = _mlops(tmp_path, "--env", "prod", "train")
    down = _mlops(tmp_path, "--env", "staging", "train")

    assert listed == "local * staging"
    assert '"environment": "staging"' in shown and '"port": 3100' in shown
    assert "s3cr3t-pw" not in shown and "postgresql://***@127.0.0.1:1/mlflow" in shown
    assert unknown.returncode == 2 and "No profile 'prod'" in unknown.stderr and "local, staging" in unknown.stderr
    assert down.returncode == 4 and "127.0.0.1:1 does not answer" in down.stderr and "s3cr3t" not in down.stderr
    assert not (tmp_path / ".mlops" / "mlflow.db").exists()  # nothing half-written


def test_env__the_reference_project_and_new_projects_have_a_staging_profile_on_the_stack(tmp_path: Path):
    from mlops.config import StackConfig, load_settings
    from mlops.scaffold import _config_text

    (tmp_path / "mlops.yaml").write_text(_config_text({"training": "data.csv", "target": "y"}))
    for project in (Path(__file__).resolve().parents[1], tmp_path):
        staging = load_settings(project=project, environment="staging", state_dir=tmp_path / "state")
        profile = StackConfig().profile()
        assert staging.mlflow_tracking_uri == profile["tracking_uri"] and staging.prefect_api_url == profile["prefect_api_url"]
        assert staging.schedules.work_pool == profile["schedules"]["work_pool"] and staging.environment == "staging"
