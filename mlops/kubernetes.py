"""Kubernetes manifests for the packaged model server: plain dicts, written as YAML for ``kubectl apply``.

Four objects, one YAML file each in the output folder (default ``state_dir/k8s/``), named after
their kind (``deployment.yaml``, ``service.yaml``, ``horizontalpodautoscaler.yaml``,
``poddisruptionbudget.yaml``), so ``kubectl apply -f FOLDER`` applies them all and a diff
shows which object changed::

    manifests = render_manifests(settings, image_for(settings, None))
    write_manifests(manifests, settings.state_dir / "k8s")

The pod runs the Bento image as BentoML builds it (user 1034, the Bento in
``/home/bentoml/bento``, port 3000) with a read-only root file system. The folders the server
writes get an ``emptyDir`` each (:data:`WRITABLE_FOLDERS`). BentoML creates its store folders
and metrics files in its home at start-up, and the image's home is ``/home/bentoml``, which an
``emptyDir`` would hide the Bento under: so ``BENTOML_HOME`` points at an ``emptyDir`` of its own
(the Bento is served from its path, its models from inside it). The prediction log and the label
store are per pod and lost with it: collect them elsewhere before relying on them in a cluster.
Sizes, replicas and names come from ``kubernetes.*`` (:class:`mlops.config.KubernetesConfig`).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import bentoml
import yaml
from bentoml.exceptions import NotFound

from mlops.config import Settings
from mlops.errors import ConfigError
from mlops.serving import resolve_alias

__all__ = ["CONTAINER_PORT", "IMAGE_USER", "POD_BENTOML_HOME", "WRITABLE_FOLDERS", "dns_name", "image_for", "render_manifests", "write_manifests"]

CONTAINER_PORT = 3000  # where a containerized Bento listens (its Dockerfile's EXPOSE)
IMAGE_USER = 1034  # the uid and gid BentoML's Dockerfile gives its user, bentoml
# Where the server writes under a read-only root: volume name -> mount path (paths in the pod, not here).
_POD_TMP = "/tmp"  # noqa: S108  # nosec B108
POD_BENTOML_HOME = "/home/bentoml/bentoml"
WRITABLE_FOLDERS = {
    "tmp": _POD_TMP,  # the pod's own scratch folder
    "bentoml-home": POD_BENTOML_HOME,  # BentoML's store folders and metrics files (prometheus_multiproc_dir)
    "predictions": "/home/bentoml/predictions",  # the prediction log (mlops.packaging's image folders)
    "labels": "/home/bentoml/labels",  # the label store POST /labels writes
}
_PROBE_PERIOD_SECONDS = 5


def dns_name(model_name: str) -> str:
    """The model's name as Kubernetes names objects (a DNS-1035 label): ``Breast_Cancer.v2`` -> ``breast-cancer-v2``.

    Services need a letter first, so a name starting with a digit gets ``model-`` in front.
    """
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name) or "model"
    if not name[0].isalpha():
        name = f"model-{name}"
    return name[:63].rstrip("-")


def image_for(settings: Settings, image: str | None) -> str:
    """``image``, else ``kubernetes.image``, else the image ``bentoml containerize`` names the packaged Bento: ``name:version``.

    The Bento is the one packaged from the version ``serving.alias`` points at now.
    """
    chosen = image or settings.kubernetes.image
    return chosen if chosen else _packaged_image(settings)


def _packaged_image(settings: Settings) -> str:
    name, alias = settings.model.name, settings.serving.alias
    fix = "run `mlops package` first, or pass --image IMAGE (or set kubernetes.image)"
    bentos = _stored_bentos(name)
    if not bentos:
        raise ConfigError(f"No Bento of model {name!r} is packaged yet: {fix}.")
    version = resolve_alias(name, alias)
    packaged = [bento for bento in bentos if bento.info.labels.get("mlflow_version") == version]
    if not packaged:
        raise ConfigError(f"Version {version} of model {name!r} ({alias}) is not packaged: {fix}.")
    return str(max(packaged, key=lambda bento: bento.creation_time).tag)


def _stored_bentos(name: str) -> list[bentoml.Bento]:
    """The Bentos of ``name`` in the BentoML store (``state_dir/bentoml``); none is an empty list."""
    try:
        return bentoml.bentos.list(name)
    except NotFound:
        return []


def render_manifests(settings: Settings, image: str) -> list[dict[str, Any]]:
    """The Deployment, Service, HorizontalPodAutoscaler and PodDisruptionBudget serving ``image``."""
    name = dns_name(settings.model.name)
    return [_deployment(settings, name, image), _service(settings, name), _autoscaler(settings, name), _disruption_budget(settings, name)]


def write_manifests(manifests: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Write each manifest to ``folder/<kind>.yaml``; an unwritable folder is a :class:`ConfigError`."""
    paths = [folder / f"{manifest['kind'].lower()}.yaml" for manifest in manifests]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, manifest in zip(paths, manifests):
            path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"Cannot write the manifests to {folder} ({exc.strerror}). Give --out a folder you can write.") from None
    return paths


def _labels(name: str) -> dict[str, str]:
    """The selector labels: never change them for a running Deployment (its selector is immutable)."""
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "model-server"}


def _metadata(settings: Settings, name: str) -> dict[str, Any]:
    labels = {**_labels(name), "app.kubernetes.io/part-of": "mlops", "app.kubernetes.io/managed-by": "mlops"}
    return {"name": name, "namespace": settings.kubernetes.namespace, "labels": labels}


def _deployment(settings: Settings, name: str, image: str) -> dict[str, Any]:
    pod = {
        "automountServiceAccountToken": False,  # the server never talks to the Kubernetes API
        # As long as a replaced version may finish its requests outside a cluster.
        "terminationGracePeriodSeconds": math.ceil(settings.serving.drain_timeout_seconds),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": IMAGE_USER, "runAsGroup": IMAGE_USER, "fsGroup": IMAGE_USER,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(settings, image)],
        "volumes": [{"name": volume, "emptyDir": {}} for volume in WRITABLE_FOLDERS],
    }
    spec = {
        "replicas": settings.kubernetes.replicas,
        "selector": {"matchLabels": _labels(name)},
        # A new pod must be ready before an old one goes: capacity never drops during a rollout.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": {"metadata": {"labels": _metadata(settings, name)["labels"]}, "spec": pod},
    }
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(settings, name), "spec": spec}


def _container(settings: Settings, image: str) -> dict[str, Any]:
    config = settings.kubernetes
    secret = {"name": config.secret_name or f"{dns_name(settings.model.name)}-api-key", "key": config.secret_key}
    return {
        "name": "model-server",
        "image": image,
        "imagePullPolicy": "IfNotPresent",  # a Bento's version tag names one build: never re-pulled for nothing
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [
            {"name": settings.serving.api_key_env, "valueFrom": {"secretKeyRef": secret}},
            {"name": "BENTOML_HOME", "value": POD_BENTOML_HOME},
        ],
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {"cpu": config.cpu_limit, "memory": config.memory_limit},
        },
        # Loading the model may take serving.startup_timeout_seconds; liveness only counts after.
        "startupProbe": _probe("/livez", math.ceil(settings.serving.startup_timeout_seconds / _PROBE_PERIOD_SECONDS)),
        "readinessProbe": _probe("/readyz", 3),
        "livenessProbe": _probe("/livez", 3),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": IMAGE_USER, "allowPrivilegeEscalation": False, "privileged": False,
            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": volume, "mountPath": path} for volume, path in WRITABLE_FOLDERS.items()],
    }


def _probe(path: str, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": _PROBE_PERIOD_SECONDS, "failureThreshold": failures}


def _service(settings: Settings, name: str) -> dict[str, Any]:
    port = {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    spec = {"type": "ClusterIP", "selector": _labels(name), "ports": [port]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _metadata(settings, name), "spec": spec}


def _autoscaler(settings: Settings, name: str) -> dict[str, Any]:
    config = settings.kubernetes
    cpu = {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": config.cpu_target_percent}}
    spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
        "minReplicas": config.min_replicas,
        "maxReplicas": config.max_replicas,
        "metrics": [{"type": "Resource", "resource": cpu}],
    }
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _metadata(settings, name), "spec": spec}


def _disruption_budget(settings: Settings, name: str) -> dict[str, Any]:
    limit = settings.kubernetes.max_unavailable
    budget: dict[str, int] = {"minAvailable": 1} if limit is None else {"maxUnavailable": limit}
    spec = {**budget, "selector": {"matchLabels": _labels(name)}}
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": _metadata(settings, name), "spec": spec}
