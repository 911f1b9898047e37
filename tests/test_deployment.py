"""Deployment against real tools: an MLflow registry in SQLite, BentoML model servers and
the swap proxy on free 127.0.0.1 ports.

One deployment is shared by the module (each model server takes ~10 s to start on two
cores); the tests run in file order as one story: deploy v1, reject a broken v3 while v1
keeps serving, swap to v2 under traffic, stop.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from registered import features as _features
from registered import register as _register
from registered import register_renamed as _register_renamed
from registered import register_unloadable
from registered import set_champion as _set_champion

from mlops import audit
from mlops.config import Settings, load_settings
from mlops.deployment import deploy, deployment_status, read_events, smoke_test, stop_deployment
from mlops.environment import tool_environment
from mlops.errors import ServingError
from mlops.serving import free_port

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")


@dataclass(frozen=True)
class Registry:
    settings: Settings
    good: str
    better: str
    broken: str
    unloadable: str


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """v1 and v2 sound, v3 trained on renamed columns (its signature mismatches), v4 not loadable."""
    state_dir = tmp_path_factory.mktemp("deployment") / "state"
    settings = load_settings(state_dir=state_dir, serving={"port": free_port()})
    with tool_environment(settings):
        good = _register(settings, C=1.0)
        better = _register(settings, C=0.5)
        broken = _register_renamed(settings)
        unloadable = register_unloadable(settings)
        _set_champion(settings, good)
        yield Registry(settings, good, better, broken, unloadable)
        stop_deployment(settings)


def _champion(settings: Settings) -> str:
    from mlflow import MlflowClient

    return str(MlflowClient().get_model_version_by_alias(settings.model.name, "champion").version)


def _predict(url: str, start: int = 0) -> dict:
    import httpx

    records = _features().iloc[start : start + 2].to_dict(orient="records")
    response = httpx.post(f"{url}/predict", json={"records": records}, timeout=30.0)
    assert response.status_code == 200, response.text
    return response.json()


def test_smoke_test__no_server_is_a_serving_error(settings: Settings):
    with pytest.raises(ServingError, match="smoke test got no answer"):
        smoke_test(f"http://127.0.0.1:{free_port()}", settings, "1")


def test_proxy_start__a_port_another_proxy_holds_is_an_error_not_a_false_start(settings: Settings, tmp_path: Path):
    import time

    import httpx

    from mlops.deployment import _ensure_proxy
    from mlops.proxy import STATUS_PATH, write_upstream
    from mlops.service.settings import proxy_settings

    port = free_port()
    upstream_file = tmp_path / "other" / "upstream.json"
    write_upstream(upstream_file, None)
    command = [sys.executable, "-m", "uvicorn", "--factory", "mlops.proxy:create_app", "--port", str(port)]
    leftover = subprocess.Popen(command, env={**os.environ, **proxy_settings(settings, upstream_file).as_environment()},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}{STATUS_PATH}", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        ours = settings.model_copy(update={"serving": settings.serving.model_copy(update={"port": port})})
        with pytest.raises(ServingError, match=f"Is port {port} taken"):
            _ensure_proxy(ours, None, "http://127.0.0.1:1")
        assert leftover.poll() is None, "the other process is not ours to stop"
    finally:
        leftover.terminate()
        leftover.wait(30)


@pytest.mark.slow
def test_deploy__serves_the_champion_behind_the_proxy(registry: Registry):
    state = deploy(registry.settings)

    assert state.url == f"http://127.0.0.1:{registry.settings.serving.port}"
    assert state.backend.version == registry.good
    assert _predict(state.url)["model_version"] == registry.good
    assert deployment_status(registry.settings).healthy
    assert read_events(registry.settings)[-1]["event"] == "deployed"
    (audited,) = audit.read_audit(registry.settings, kinds=("deploy",))  # one audit line per deployment
    assert (audited["version"], audited["alias"], audited["replaced"]) == (registry.good, "champion", None)
    assert (registry.settings.state_dir / "deploy" / "state.json").is_file()
    print(f"deployment ready in {state.backend.ready_seconds} s")  # measured, never asserted


@pytest.mark.slow
def test_deploy__the_running_version_again_is_a_no_op(registry: Registry):
    before = deployment_status(registry.settings).state

    assert deploy(registry.settings) == before


@pytest.mark.slow
def test_deploy__broken_version_is_rejected_and_rolled_back(registry: Registry):
    from mlflow import MlflowClient

    settings = registry.settings
    _set_champion(settings, registry.broken)

    with pytest.raises(ServingError, match=f"(?s)Version {registry.broken} was rejected.*smoke test failed.*422"):
        deploy(settings)

    assert _champion(settings) == registry.good
    assert _predict(deployment_status(settings).state.url)["model_version"] == registry.good
    assert deployment_status(settings).healthy
    event = read_events(settings)[-1]
    assert (event["event"], event["version"], event["restored"]) == ("rejected", registry.broken, registry.good)
    tags = MlflowClient().get_model_version(settings.model.name, registry.broken).tags
    assert tags["mlops.deploy.status"] == "rejected"
    rolled = audit.read_audit(settings, limit=1)[0]  # the automatic alias roll-back is audited
    assert (rolled["kind"], rolled["version"], rolled["rejected"]) == ("deploy_rollback", registry.good, registry.broken)


@pytest.mark.slow
def test_deploy__version_never_ready_is_rejected_and_rolled_back(registry: Registry):
    settings = registry.settings
    _set_champion(settings, registry.unloadable)

    with pytest.raises(ServingError, match=f"(?s)Version {registry.unloadable} was rejected.*failed to start"):
        deploy(settings)

    assert _champion(settings) == registry.good
    assert _predict(deployment_status(settings).state.url)["model_version"] == registry.good
    assert read_events(settings)[-1]["event"] == "rejected"


@pytest.mark.slow
def test_deploy__swap_under_continuous_traffic_drops_nothing(registry: Registry):
    import httpx

    settings = registry.settings
    old = deployment_status(settings).state
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def send_continuously() -> None:
        with httpx.Client(base_url=old.url, timeout=60.0) as client:
            while not stop.is_set():
                for path in ("/predict", "/predict_batched"):
                    try:
                        response = client.post(path, json={"records": _features().iloc[:1].to_dict(orient="records")})
                        body = response.json()
                        version = body["model_version"] if path == "/predict" else body[0]["model_version"]
                        outcomes[f"{response.status_code} v{version}"] += 1
                    except (httpx.HTTPError, KeyError, ValueError) as exc:
                        outcomes[f"failed {type(exc).__name__}"] += 1

    client = threading.Thread(target=send_continuously)
    client.start()
    try:
        _set_champion(settings, registry.better)
        state = deploy(settings)
        _predict(state.url)
    finally:
        stop.set()
        client.join()

    print(f"requests during the swap: {dict(outcomes)}")
    assert set(outcomes) == {f"200 v{registry.good}", f"200 v{registry.better}"}
    assert state.replaced_version == registry.good
    assert deployment_status(settings).healthy
    with pytest.raises(ProcessLookupError):
        os.killpg(old.backend.pid, 0)


@pytest.mark.slow
def test_cli_deploy_status_and_stop(registry: Registry):
    settings = registry.settings
    env = {**os.environ, "MLOPS_STATE_DIR": str(settings.state_dir), "MLOPS_SERVING__PORT": str(settings.serving.port)}
    state = deployment_status(settings).state

    status = subprocess.run([str(MLOPS), "deploy", "status"], capture_output=True, text=True, cwd=REPO, env=env)
    stopped = subprocess.run([str(MLOPS), "deploy", "stop"], capture_output=True, text=True, cwd=REPO, env=env)
    after = subprocess.run([str(MLOPS), "deploy", "status"], capture_output=True, text=True, cwd=REPO, env=env)

    assert status.returncode == 0, status.stderr
    assert f"v{registry.better} (champion)" in status.stdout and "ready: yes" in status.stdout
    assert stopped.returncode == 0 and f"Stopped {settings.model.name} v{registry.better}" in stopped.stdout
    assert after.returncode == 3 and "Nothing is deployed" in after.stdout
    for pid in (state.proxy_pid, state.backend.pid):
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)
