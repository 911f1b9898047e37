"""From laptop to cluster: `mlops k8s render`, checked offline against Kubernetes' own schemas and checkov,
and the repository's server stack (deploy/compose.yaml) and Prefect work-pool template."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from mlops import kubernetes
from mlops.cli import cli
from mlops.config import Settings, load_settings
from mlops.errors import ConfigError
from mlops.kubernetes import CONTAINER_PORT, IMAGE_USER, POD_BENTOML_HOME, WRITABLE_FOLDERS, dns_name, image_for, render_manifests, write_manifests

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"  # `make checkov`: its own environment (its pins clash with the lock)
KUBERNETES_VERSION = "1.33.0"  # a recent release kubernetes-validate bundles
IMAGE = "registry.example/breast-cancer-classifier:v1-abc"
KINDS = ["Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]


@pytest.fixture
def cluster_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.chdir(REPO)
    return load_settings(state_dir=tmp_path / "state")


def _by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {manifest["kind"]: manifest for manifest in manifests}


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return _by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"][0]


def _schema_problems(manifest: dict[str, Any]) -> str | None:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:  # its str() holds the whole schema: the message is enough
        return f"{manifest['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}"
    return None


def test_render_manifests__every_object_validates_against_the_kubernetes_schemas(cluster_settings):
    manifests = render_manifests(cluster_settings, IMAGE)

    assert [manifest["kind"] for manifest in manifests] == KINDS
    assert [problem for problem in map(_schema_problems, manifests) if problem] == []


def test_render_manifests__names_labels_and_namespace_come_from_the_model_and_config(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    settings = load_settings(state_dir=tmp_path / "state", model={"name": "Breast_Cancer.v2"}, kubernetes={"namespace": "models"})

    manifests = render_manifests(settings, IMAGE)

    assert {manifest["metadata"]["name"] for manifest in manifests} == {"breast-cancer-v2"}
    assert {manifest["metadata"]["namespace"] for manifest in manifests} == {"models"}
    deployment, service = _by_kind(manifests)["Deployment"], _by_kind(manifests)["Service"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["selector"] == selector and service["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize(("model_name", "expected"), [
    ("breast-cancer-classifier", "breast-cancer-classifier"),
    ("Bank_Marketing.v2", "bank-marketing-v2"),
    ("2fast", "model-2fast"),  # a Service name starts with a letter
    ("a" * 63, "a" * 63),
])
def test_dns_name__is_a_dns_label(model_name, expected):
    assert dns_name(model_name) == expected
    assert re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", dns_name(model_name))


def test_render_manifests__probes_port_and_rollout_never_drop_capacity(cluster_settings):
    manifests = render_manifests(cluster_settings, IMAGE)
    container, deployment = _container(manifests), _by_kind(manifests)["Deployment"]

    assert container["image"] == IMAGE
    assert container["ports"] == [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def test_render_manifests__pod_runs_as_bentoml_user_without_privileges_on_a_read_only_root(cluster_settings):
    manifests = render_manifests(cluster_settings, IMAGE)
    container = _container(manifests)
    pod = _by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]

    security = container["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == IMAGE_USER == 1034
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]} and security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    assert mounts == WRITABLE_FOLDERS and "/tmp" in mounts.values()
    assert "/home/bentoml" not in mounts.values(), "an emptyDir over the image's home would hide the Bento"
    assert {"name": "BENTOML_HOME", "value": POD_BENTOML_HOME} in container["env"] and POD_BENTOML_HOME in mounts.values()
    assert {volume["name"] for volume in pod["volumes"] if volume["emptyDir"] == {}} == set(mounts)


def test_render_manifests__api_key_is_a_secret_reference_never_a_value(cluster_settings, monkeypatch):
    monkeypatch.setenv("MLOPS_API_KEY", "s3cret-key-value")
    settings = load_settings(state_dir=cluster_settings.state_dir, kubernetes={"secret_name": "model-key", "secret_key": "token"})

    manifests = render_manifests(settings, IMAGE)

    key = [variable for variable in _container(manifests)["env"] if variable["name"] == settings.serving.api_key_env]
    assert key == [{"name": settings.serving.api_key_env, "valueFrom": {"secretKeyRef": {"name": "model-key", "key": "token"}}}]
    assert "s3cret-key-value" not in yaml.safe_dump_all(manifests)


def test_render_manifests__config_sizes_resources_autoscaler_and_budget(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    sizes = {"replicas": 3, "min_replicas": 3, "max_replicas": 9, "cpu_target_percent": 55, "cpu_request": "250m",
             "cpu_limit": "2", "memory_request": "1Gi", "memory_limit": "2Gi", "max_unavailable": 2}
    settings = load_settings(state_dir=tmp_path / "state", kubernetes=sizes)

    manifests = render_manifests(settings, IMAGE)

    resources = _container(manifests)["resources"]
    assert resources == {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}
    autoscaler = _by_kind(manifests)["HorizontalPodAutoscaler"]["spec"]
    assert (autoscaler["minReplicas"], autoscaler["maxReplicas"]) == (3, 9)
    assert autoscaler["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 55}
    assert autoscaler["scaleTargetRef"]["name"] == _by_kind(manifests)["Deployment"]["metadata"]["name"]
    budget = _by_kind(manifests)["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] == 2 and "minAvailable" not in budget
    assert _by_kind(render_manifests(load_settings(state_dir=tmp_path / "state"), IMAGE))["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert [problem for problem in map(_schema_problems, manifests) if problem] == []


@pytest.mark.parametrize(("kubernetes", "expected"), [
    ({"min_replicas": 4, "max_replicas": 2}, r"min_replicas \(4\) is above max_replicas \(2\)"),
    ({"replicas": 9}, r"replicas \(9\) is outside"),
    ({"cpu_request": "2", "cpu_limit": "500m"}, r"cpu_request \(2\) is above cpu_limit"),
    ({"memory_request": "2Gi", "memory_limit": "512Mi"}, r"memory_request \(2Gi\) is above memory_limit"),
    ({"memory_limit": "lots"}, r"kubernetes\.memory_limit"),
    ({"namespace": "Not_A_Label"}, r"kubernetes\.namespace"),
])
def test_kubernetes_config__inconsistent_values_are_a_config_error(tmp_path, monkeypatch, kubernetes, expected):
    monkeypatch.chdir(REPO)
    with pytest.raises(ConfigError, match=expected):
        load_settings(state_dir=tmp_path / "state", kubernetes=kubernetes)


def test_image_for__option_then_config_then_the_newest_bento_of_the_serving_version(cluster_settings, monkeypatch):
    def bento(version: str, mlflow_version: str, minute: int) -> SimpleNamespace:
        return SimpleNamespace(tag=f"breast-cancer-classifier:{version}", info=SimpleNamespace(labels={"mlflow_version": mlflow_version}),
                               creation_time=datetime(2026, 1, 1, 0, minute, tzinfo=UTC))

    bentos = [bento("a", "1", 0), bento("b", "2", 1), bento("c", "2", 2), bento("d", "3", 3)]
    monkeypatch.setattr(kubernetes, "_stored_bentos", lambda name: bentos)
    monkeypatch.setattr(kubernetes, "resolve_alias", lambda name, alias: "2")
    configured = load_settings(state_dir=cluster_settings.state_dir, kubernetes={"image": "registry.example/configured:1"})

    assert image_for(cluster_settings, "registry.example/given:1") == "registry.example/given:1"
    assert image_for(configured, None) == "registry.example/configured:1"
    assert image_for(cluster_settings, None) == "breast-cancer-classifier:c"  # what `bentoml containerize` would name it
    monkeypatch.setattr(kubernetes, "resolve_alias", lambda name, alias: "4")
    with pytest.raises(ConfigError, match=r"Version 4 of model 'breast-cancer-classifier' \(champion\) is not packaged.*--image"):
        image_for(cluster_settings, None)


def test_cli_k8s_render__writes_one_file_per_object_in_the_state_folder(cluster_settings):
    result = CliRunner().invoke(cli, ["--state-dir", str(cluster_settings.state_dir), "k8s", "render", "--image", IMAGE])

    assert result.exit_code == 0, result.output
    folder = cluster_settings.state_dir / "k8s"
    written = sorted(folder.glob("*.yaml"))
    assert [path.name for path in written] == sorted(f"{kind.lower()}.yaml" for kind in KINDS)
    loaded = [yaml.safe_load(path.read_text(encoding="utf-8")) for path in written]
    assert sorted(loaded, key=lambda m: m["kind"]) == sorted(render_manifests(cluster_settings, IMAGE), key=lambda m: m["kind"])
    assert f"kubectl apply -n mlops -f {folder}" in result.output


def test_cli_k8s_render__unwritable_out_exits_2_without_a_traceback(cluster_settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    result = CliRunner().invoke(cli, ["--state-dir", str(cluster_settings.state_dir), "k8s", "render", "--image", IMAGE,
                                      "--out", str(blocker / "k8s")])

    assert result.exit_code == 2, result.output
    assert "Cannot write the manifests" in result.output and "Give --out a folder you can write" in result.output
    assert isinstance(result.exception, SystemExit)


def test_cli_k8s_render__no_package_and_no_image_exits_2_naming_the_fix(tmp_path):
    # A fresh process: BentoML reads its home once, at import, and the store must be this test's empty one.
    environment = {**os.environ, "MLOPS_STATE_DIR": str(tmp_path / "state"), "MLOPS_LOGS__FORMAT": "text"}
    environment.pop("MLOPS_KUBERNETES__IMAGE", None)
    result = subprocess.run([sys.executable, "-c", "from mlops.cli import main; main()", "k8s", "render"],
                            capture_output=True, text=True, cwd=REPO, env=environment, timeout=120)

    assert result.returncode == 2, result.stderr
    assert "is packaged yet" in result.stderr and "--image" in result.stderr and "mlops package" in result.stderr
    assert "Traceback" not in result.stderr


def test_write_manifests__checkov_finds_nothing_but_the_accepted_checks(cluster_settings, tmp_path):
    if not CHECKOV.is_file():
        pytest.skip(f"checkov is not installed at {CHECKOV.relative_to(REPO)}: `make checkov` builds its own environment")
    folder = tmp_path / "k8s"
    write_manifests(render_manifests(cluster_settings, IMAGE), folder)
    offline = {**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "TRUE"}

    result = subprocess.run([str(CHECKOV), "--config-file", str(DEPLOY / "k8s" / "checkov.yaml"), "-d", str(folder), "-o", "json"],
                            capture_output=True, text=True, env=offline, timeout=120)

    report = json.loads(result.stdout)
    failed = [(check["check_id"], check["check_name"]) for check in report["results"]["failed_checks"]]
    assert failed == [] and result.returncode == 0, failed or result.stderr
    assert report["summary"]["passed"] > 50 and report["summary"]["parsing_errors"] == 0


def test_checkov_config__every_accepted_check_says_why():
    lines = (DEPLOY / "k8s" / "checkov.yaml").read_text(encoding="utf-8").splitlines()
    skipped = [index for index, line in enumerate(lines) if re.match(r"\s+- CKV", line)]
    assert skipped, "no accepted check listed"
    assert all(lines[index - 1].strip().startswith("#") for index in skipped)


def _job_template() -> dict[str, Any]:
    return json.loads((DEPLOY / "prefect" / "k8s-base-job-template.json").read_text(encoding="utf-8"))


def test_prefect_job_template__has_the_kubernetes_worker_keys_and_declares_every_placeholder():
    from prefect.server.schemas.actions import validate_base_job_template

    template = _job_template()

    assert set(template) == {"job_configuration", "variables"}
    configuration, variables = template["job_configuration"], template["variables"]
    assert {"command", "env", "labels", "name", "namespace", "job_manifest", "cluster_config",
            "job_watch_timeout_seconds", "pod_watch_timeout_seconds", "stream_output"} <= set(configuration)
    assert {"image", "namespace", "service_account_name", "image_pull_policy", "finished_job_ttl"} <= set(variables["properties"])
    assert validate_base_job_template(template) == template  # what the Prefect server checks when a pool is created
    assert configuration["job_manifest"]["kind"] == "Job" and configuration["job_manifest"]["apiVersion"] == "batch/v1"


def test_prefect_job_template__rendered_with_its_defaults_is_a_valid_job():
    from prefect.utilities.templating import apply_values

    template = _job_template()
    values = {name: field["default"] for name, field in template["variables"]["properties"].items() if "default" in field}
    values |= {"name": "training", "image": "registry.example/flows:1", "env": [{"name": "MLOPS_LOGS__FORMAT", "value": "json"}],
               "labels": {"app.kubernetes.io/part-of": "mlops"}, "command": ["prefect", "flow-run", "execute"]}

    job = apply_values(template["job_configuration"], values)["job_manifest"]

    assert _schema_problems(job) is None
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def test_compose__services_start_in_order_on_postgres():
    services = _compose()["services"]

    assert set(services) == {"postgres", "mlflow", "prefect-server", "prefect-worker"}
    assert services["postgres"]["image"] == "postgres:15"
    assert services["mlflow"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert set(services["prefect-worker"]["depends_on"]) == {"prefect-server", "mlflow"}
    assert "--serve-artifacts" in services["mlflow"]["command"]
    assert services["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql://")
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    worker = services["prefect-worker"]["command"]
    assert worker[:3] == ["prefect", "worker", "start"] and worker[worker.index("--pool") + 1] == "mlops"
    assert worker[worker.index("--type") + 1] == "process"


def test_compose__published_ports_bind_localhost_only():
    published = [port for service in _compose()["services"].values() for port in service.get("ports", [])]

    assert published, "mlflow and prefect-server publish their ports"
    assert all(str(port).startswith("127.0.0.1:") for port in published), published


def test_compose__no_password_is_written_in():
    text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
    compose = _compose()

    environments = [service.get("environment", {}) for service in compose["services"].values()]
    secrets = {name: value for env in environments for name, value in env.items() if "PASSWORD" in name}
    assert secrets and all(re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value) for value in secrets.values()), secrets
    credentials = re.findall(r"[a-z+]+://([^@\n]*)@", text)  # user:password@host in a URL
    reference = r"\$\{\w+(?::-\w+)?\}:\$\{POSTGRES_PASSWORD:\?[^}]*\}"
    assert credentials and all(re.fullmatch(reference, userinfo) for userinfo in credentials), credentials
