"""The ``mlops`` command as a user runs it: a subprocess, real exit codes, no tracebacks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")


def run_mlops(*args: str, state_dir: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MLOPS_STATE_DIR": str(state_dir), **env}
    return subprocess.run(
        [str(MLOPS), *args], capture_output=True, text=True, cwd=REPO, env=environment, timeout=timeout
    )


def test_help__is_fast_and_lists_the_commands(tmp_path):
    started = time.perf_counter()
    result = run_mlops("--help", state_dir=tmp_path)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0
    for command in ("validate", "train", "serve", "monitor", "ui", "demo", "compare", "promote", "rollback"):
        assert command in result.stdout
    print(f"mlops --help: {elapsed:.2f} s")  # measured, never asserted: see benchmarks/


def test_validate__training_data_passes_and_writes_a_report(tmp_path):
    result = run_mlops("validate", state_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Validation passed" in result.stdout
    assert (tmp_path / "reports" / "validation-latest.html").is_file()


def _bad_training_file(tmp_path: Path) -> Path:
    """The training data with one negative area: out of the suite's range."""
    bad = tmp_path / "bad.csv"
    lines = (REPO / "data" / "train.csv").read_text().splitlines()
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("mean_area")] = "-1"
    bad.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    return bad


def test_validate__failing_data_exits_1_naming_the_expectations(tmp_path):
    result = run_mlops("validate", str(_bad_training_file(tmp_path)), state_dir=tmp_path)
    assert result.returncode == 1
    assert "mean_area" in result.stdout and "expect_column_values_to_be_between" in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_train__failing_data_exits_1_and_registers_nothing(tmp_path):
    from mlflow.tracking import MlflowClient

    result = run_mlops("train", "--data", str(_bad_training_file(tmp_path)), state_dir=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "mean_area" in result.stderr and "Validation FAILED" in result.stderr
    assert "Traceback" not in result.stderr
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.search_registered_models() == []
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.parametrize("variable", ["MLOPS_TRACKING_URI", "MLOPS_PREFECT_API_URL"])
def test_configured_server_down__exit_4_naming_the_server_and_the_fix(tmp_path, variable):
    from mlops.serving import free_port

    address = f"http://127.0.0.1:{free_port()}"
    down = address + ("/api" if "PREFECT" in variable else "/?token=secret")
    result = run_mlops("train", state_dir=tmp_path, **{variable: down})
    assert result.returncode == 4
    assert address in result.stderr and "Start it" in result.stderr
    assert "secret" not in result.stderr, "a URL's credentials are never printed"
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_ui__serves_the_mlflow_ui_on_loopback(tmp_path):
    import httpx

    from mlops.serving import free_port

    port = free_port()
    environment = {**os.environ, "MLOPS_STATE_DIR": str(tmp_path)}
    process = subprocess.Popen(
        [str(MLOPS), "ui", "--port", str(port)], cwd=REPO, env=environment,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        status = None
        while time.monotonic() < deadline and status != 200:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.5)
        assert status == 200
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("validate", "missing.csv"), "does not exist"),
        (("--config", "missing.yaml", "train"), "Config file missing.yaml does not exist"),
        (("serve",), "Run `mlops train` first"),
        (("train", "--bogus"), "No such option"),
    ],
)
def test_user_errors__exit_2_with_a_message_and_no_traceback(tmp_path, args, message):
    result = run_mlops(*args, state_dir=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_value__exit_2_naming_the_key(tmp_path):
    config = tmp_path / "mlops.yaml"
    config.write_text("monitoring:\n  drift_share_threshold: 7\n")
    result = run_mlops("--config", str(config), "train", state_dir=tmp_path)
    assert result.returncode == 2
    assert "monitoring.drift_share_threshold" in result.stderr


@pytest.mark.slow
def test_demo__the_retrained_model_replaces_the_champion_on_a_clean_and_on_an_existing_state_folder(tmp_path):
    state = tmp_path / "state"
    for attempt, (champion, retrained) in (("clean", (1, 2)), ("existing", (3, 4))):
        started = time.perf_counter()
        result = run_mlops("demo", state_dir=state, MLOPS_SERVING__PORT=str(_free_port()))
        if attempt == "clean":  # benchmarks/demo_end_to_end.py's rows, from this run (its quick run is not repeated)
            rows = _benchmark("demo_end_to_end").stage_times(state, time.perf_counter() - started)
            assert {"total", "start-up and shutdown"} <= set(rows) and len(rows) > 3, rows
            assert all(seconds >= 0 for seconds in rows.values()), rows
        out = result.stdout
        assert result.returncode == 0, f"{attempt} state folder:\n{out}\n{result.stderr}"
        assert f"v{retrained} replaced v{champion}" in out, out
        assert " 0 failed requests" in out and "(stopped)" in out
        assert "recent data (gate)" in out and f"→ v{retrained}" in out
        assert re.search(r"\d+ requests answered during the swap, 0 failed", out), out
        assert "stored through POST /labels" in out and " 0 refused" in out
        assert "Traceback" not in result.stderr
    reports = list((state / "reports").glob("drift-*.html"))
    assert len(reports) == 2
    assert list((state / "predictions").glob("predictions-*.jsonl"))
    assert not (state / "deploy" / "state.json").exists(), "the demo stops its deployment"
    assert not list(Path.home().glob(".mlops*")), "nothing is written to the home directory"


def _benchmark(name: str):
    """A script of benchmarks/ as a module (they are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo__sigterm_mid_run_stops_every_process_it_started(tmp_path):
    import socket

    state, port = tmp_path / "state", _free_port()
    environment = {**os.environ, "MLOPS_STATE_DIR": str(state), "MLOPS_SERVING__PORT": str(port)}
    demo = subprocess.Popen([str(MLOPS), "demo"], cwd=REPO, env=environment, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (state / "deploy" / "state.json").exists() and time.monotonic() < deadline and demo.poll() is None:
        time.sleep(0.5)
    time.sleep(2)  # traffic is flowing
    import json

    recorded = json.loads((state / "deploy" / "state.json").read_text())
    groups = [recorded["proxy_pid"], recorded["backend"]["pid"]]
    demo.send_signal(signal.SIGTERM)
    _, err = demo.communicate(timeout=120)
    assert demo.returncode == 130, err
    assert "deployment was stopped" in err and "Traceback" not in err
    assert not (state / "deploy" / "state.json").exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the swap proxy is gone"
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


def _free_port() -> int:
    from mlops.serving import free_port

    return free_port()


def _two_versions(settings):
    """v1 trained on 12 rows (weak, promoted first), v2 on all rows (promoted over v1)."""
    from mlops import tracking
    from mlops.data import load_table
    from mlops.training import DataSplit, split_holdout, train_model

    frame = load_table(settings.data.training)
    split = split_holdout(frame, "target", settings.model.test_size, settings.model.seed)
    tiny = DataSplit(split.x_train.head(12), split.y_train.head(12), split.x_holdout, split.y_holdout)
    for trained, trigger in ((train_model(tiny, settings.model), "manual"), (train_model(split, settings.model), "drift")):
        registered = tracking.log_and_register(
            trained, split, frame, settings, data_path=settings.data.training, tags={"trigger": trigger}
        )
        tracking.gate_challenger(registered, split, settings)


@pytest.mark.slow
def test_compare_promote_rollback__as_a_user_runs_them(tool_env, settings):
    import json

    _two_versions(settings)
    listed = run_mlops("compare", "--json", state_dir=settings.state_dir)
    assert listed.returncode == 0, listed.stderr
    versions = json.loads(listed.stdout)
    assert [(v["version"], v["aliases"]) for v in versions] == [("2", ["challenger", "champion"]), ("1", ["previous"])]
    assert versions[0]["tags"]["mlops.trigger"] == "drift" and "roc_auc" in versions[0]["metrics"]
    table = run_mlops("compare", state_dir=settings.state_dir)
    assert table.returncode == 0 and "champion" in table.stdout and "drift" in table.stdout
    refused = run_mlops("promote", "1", state_dir=settings.state_dir)
    assert refused.returncode == 1 and "does not beat" in refused.stderr and "Traceback" not in refused.stderr
    rolled = run_mlops("rollback", "--reason", "latency regression", state_dir=settings.state_dir)
    assert rolled.returncode == 0, rolled.stderr
    assert "champion → v1" in rolled.stdout
    promoted = run_mlops("promote", "2", "--reason", "fixed", state_dir=settings.state_dir)
    assert promoted.returncode == 0 and "champion → v2" in promoted.stdout, promoted.stderr
    audit = [json.loads(line) for line in (settings.state_dir / "audit.jsonl").read_text().splitlines()]
    assert [(e["kind"], e["champion"], e["reason"]) for e in audit][-2:] == [
        ("rollback", "1", "latency regression"), ("promote", "2", "fixed")
    ]
