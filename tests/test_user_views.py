"""What users look at: every UI in a real browser (Debian's headless Chromium, driven by
Playwright), ``mlops status``, and the progress a long command shows on a terminal.

One ``mlops demo`` run, then ``mlops deploy``, makes what they show: MLflow runs and
versions, Prefect flow runs with their logs and artifacts, a drift report, a running
endpoint. Each UI is opened as a user would: the MLflow UI (``mlops ui``), a Prefect
server on the demo's database, the endpoint's Swagger page, the drift report. A
screenshot of every page is saved under ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mlops import processes
from mlops.serving import free_port

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root in a container with a closed network: no sandbox, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip
MODEL = "breast-cancer-classifier"
MLOPS = str(Path(sys.executable).with_name("mlops"))

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium is not installed: `make test` installs Debian's chromium with apt-get"
)


def _mlops(state: Path, *args: str, port: int, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLOPS_STATE_DIR": str(state), "MLOPS_SERVING__PORT": str(port)}
    return subprocess.run(  # noqa: S603 — our own CLI
        [MLOPS, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """A state folder after ``mlops demo``, with the champion deployed again: (state folder, port)."""
    state = tmp_path_factory.mktemp("browser") / "state"
    port = free_port()
    ran = _mlops(state, "demo", port=port)
    assert ran.returncode == 0, ran.stderr[-3000:]
    deployed = _mlops(state, "deploy", port=port)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    yield state, port
    _mlops(state, "deploy", "stop", port=port, timeout=120)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest) -> Iterator[object]:
    """A fresh page; its screenshot is saved when the test ends, passed or failed."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{request.node.name}.png"), full_page=False)
    context.close()


class Background:
    """A server of ours started for a test: its whole tree is stopped at the end."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path) -> None:
        self.process = processes.start(command, log_path=log_path, env=env)
        self.started = processes.process_start(self.process.pid)
        self.log_path = log_path

    def wait_for(self, url: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"it exited: {self.log_path.read_text()[-2000:]}"
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"{url} not up after {timeout} s: {self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        processes.stop_tree(self.process.pid, self.started, processes.descendants(self.process.pid), timeout=20)
        self.process.wait()


def _tracking(state: Path):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}")


@pytest.fixture(scope="module")
def mlflow_ui(demo: tuple[Path, int]) -> Iterator[str]:
    state, _ = demo
    port = free_port()
    env = {**os.environ, "MLOPS_STATE_DIR": str(state)}
    server = Background([MLOPS, "ui", "--port", str(port)], env, state / "logs" / "ui-test.log")
    try:
        server.wait_for(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def prefect_ui(demo: tuple[Path, int]) -> Iterator[str]:
    """The demo's Prefect database behind a Prefect server and its UI, started as ``mlops schedule`` does."""
    from mlops.config import Settings
    from mlops.orchestration import start_local_server

    server = start_local_server(Settings(state_dir=demo[0]), free_port())
    try:
        yield server.api_url.removesuffix("/api")
    finally:
        server.stop()


@needs_chromium
def test_mlflow_ui__the_experiment_lists_the_named_runs_and_the_registry_shows_the_aliases(demo, mlflow_ui, page):
    state, _ = demo
    client = _tracking(state)
    experiment = client.get_experiment_by_name("breast-cancer")
    parents = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" not in r.data.tags]
    names = [r.info.run_name for r in parents]
    assert names and all(name.startswith("train v") for name in names), names

    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development", "the UI opens it in its model-training view"
    page.goto(f"{mlflow_ui}/#/experiments/{experiment.experiment_id}/runs")
    page.get_by_text(names[0], exact=False).first.wait_for()
    for name in names:
        assert page.get_by_text(name, exact=False).count() >= 1, f"run {name!r} is not listed"

    page.goto(f"{mlflow_ui}/#/models/{MODEL}")
    page.get_by_text("champion", exact=False).first.wait_for()
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    assert page.get_by_text(f"Version {champion}", exact=False).count() >= 1


@needs_chromium
def test_prefect_ui__the_training_flow_run_shows_its_log_lines_and_artifacts(demo, prefect_ui, page):
    runs = httpx.post(f"{prefect_ui}/api/flow_runs/filter", json={"sort": "START_TIME_ASC", "limit": 50}).json()
    flows = {f["id"]: f["name"] for f in httpx.post(f"{prefect_ui}/api/flows/filter", json={}).json()}
    training = next(r for r in runs if "training" in flows[r["flow_id"]])
    logs = httpx.post(
        f"{prefect_ui}/api/logs/filter", json={"logs": {"flow_run_id": {"any_": [training["id"]]}}, "limit": 200}
    ).json()
    assert len(logs) > 5, "the training flow run has almost no log lines"
    artifacts = httpx.post(
        f"{prefect_ui}/api/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [training["id"]]}}}
    ).json()
    assert artifacts, "the training flow run published no artifact"

    page.goto(f"{prefect_ui}/runs/flow-run/{training['id']}")
    line = next(log["message"] for log in logs if "mlops" in log["name"]).splitlines()[0][:60]
    page.get_by_text(line, exact=False).first.wait_for()
    page.get_by_text("Artifacts", exact=True).first.click()
    key = next(a["key"] for a in artifacts if a.get("key"))
    page.get_by_text(key, exact=False).first.wait_for()


@needs_chromium
def test_swagger_page__try_it_out_sends_a_request_and_sees_200(demo, page):
    state, port = demo
    page.goto(f"http://127.0.0.1:{port}/")
    assert MODEL in page.title() or page.get_by_text(MODEL, exact=False).count() >= 1
    path = page.locator(".opblock-summary-path", has_text=re.compile(r"^/predict$"))
    operation = page.locator(".opblock-post").filter(has=path)
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for()
    assert status.inner_text().strip().startswith("200"), status.inner_text()


@needs_chromium
def test_drift_report__the_drifted_columns_are_on_the_first_screen(demo, page):
    state, _ = demo
    reports = sorted((state / "reports").rglob("drift*.html"), key=lambda p: p.stat().st_mtime)
    assert reports, f"no drift report under {state / 'reports'}"
    summary = json.loads(sorted((state / "reports").rglob("drift*.json"))[-1].read_text())
    drifted = [c["column"] for c in summary["columns"] if c["drifted"]]
    assert drifted, "the demo's shift drifted no column"

    page.goto(reports[-1].as_uri())
    page.wait_for_load_state("networkidle")
    first_screen = page.evaluate("() => document.body.innerText.slice(0, 4000)")
    for column in drifted[:3]:
        assert column in first_screen, f"drifted column {column!r} is not on the first screen"


def test_status__one_screen_of_the_deployment_the_aliases_the_last_check_and_the_schedules(demo):
    state, port = demo
    shown = _mlops(state, "status", "--json", port=port, timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    status = json.loads(shown.stdout)
    champion = str(_tracking(state).get_model_version_by_alias(MODEL, "champion").version)
    serving = status["serving"]
    assert serving["version"] == champion and serving["healthy"] and serving["url"] == f"http://127.0.0.1:{port}"
    assert serving["answered_last_hour"] > 1000, "the demo's traffic was answered within the hour"
    assert serving["refused_last_hour"].get("422", 0) >= 1, "the demo sends records the contract refuses"
    aliases = {alias["alias"]: alias for alias in status["aliases"]}
    assert aliases["champion"]["version"] == champion and aliases["champion"]["gate"]
    assert "previous" in aliases
    monitoring = status["monitoring"]
    assert monitoring["retrain"] and monitoring["drifted_columns"] and monitoring["report"].endswith(".html")
    # The Prefect UI test's server (module-scoped) may still run on this state folder: no schedule on it.
    assert status["schedules"] in (None, []) and status["problems"] == []

    screen = _mlops(state, "status", port=port, timeout=120)
    assert screen.returncode == 0, screen.stderr[-3000:]
    for expected in (f"v{champion} (champion)", "healthy", f"champion v{champion}", "retrain", "mlops schedule"):
        assert expected in screen.stdout, screen.stdout
    assert "\x1b[" not in screen.stdout, "no terminal codes when the output is not a terminal"


def test_progress__a_long_command_on_a_terminal_shows_its_stage_and_time_and_nothing_when_piped(demo, tmp_path):
    import pty

    state, port = demo
    command = [MLOPS, "validate"]
    env = {**os.environ, "MLOPS_STATE_DIR": str(state), "MLOPS_SERVING__PORT": str(port), "COLUMNS": "120"}
    leader, follower = pty.openpty()
    validated = subprocess.Popen(command, cwd=REPO, env=env, stdin=follower, stdout=follower, stderr=follower)  # noqa: S603
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the command ended
            break
        if not chunk:
            break
        seen += chunk
    assert validated.wait(timeout=300) == 0, seen.decode(errors="replace")[-2000:]
    terminal = seen.decode(errors="replace")
    assert "validating train.csv" in terminal and re.search(r"0:00:\d\d", terminal), terminal[-2000:]

    piped = _mlops(state, "validate", port=port, timeout=300)
    assert piped.returncode == 0, piped.stderr[-2000:]
    assert "validating train.csv" not in piped.stderr + piped.stdout and "\x1b[" not in piped.stderr
