"""Promotion across environments: a blessed version copied into the next profile's registry, then gated there.

MLflow's pattern for staging → production: ``copy_model_version`` of the source
environment's champion into the target's registered model (one registry), or, when the
two profiles use different tracking servers, the version's model files carried from one
server to the other and registered there. The copy then goes through the target's own
gate (:func:`mlops.tracking.promote_version`: margin against the target's champion on the
holdout, the floors, the registry lock, the audit trail), so a worse model never replaces
production's champion because staging liked it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlops.config import Settings
from mlops.environment import tool_environment
from mlops.errors import RegistryError
from mlops.tracking import CHAMPION, COMPLETE, STATUS_TAG, TAG_PREFIX, PromotionDecision, create_experiment, promote_version
from mlops.training import DataSplit

__all__ = ["PROMOTED_FROM_TAG", "promote_to"]

PROMOTED_FROM_TAG = TAG_PREFIX + "promoted_from"


def promote_to(source: Settings, version: str, target: Settings, split: DataSplit, *, force: bool = False, reason: str = "") -> PromotionDecision:
    """Copy ``version`` of ``source``'s model into ``target``'s registry and promote it there through the gate.

    Only the source's champion is copied unless ``force``: what the earlier environment
    has not blessed does not move on.
    """
    client = MlflowClient(source.mlflow_tracking_uri, source.mlflow_tracking_uri)
    found = _version(client, source.model.name, version, source.environment)
    if CHAMPION not in found.aliases and not force:
        raise RegistryError(
            f"Version {version} of '{source.model.name}' is not the champion of '{source.environment}': only a blessed "
            f"version moves on. Promote it there first (`mlops --env {source.environment} promote {version}`), or pass --force."
        )
    origin = f"{source.environment}:{source.model.name}/{version}"
    with tool_environment(target), _registry(target.mlflow_tracking_uri):
        copied = _copy(client, found, source, target)
        tags = {key: value for key, value in found.tags.items() if key.startswith(TAG_PREFIX)}
        for key, value in {**tags, STATUS_TAG: COMPLETE, PROMOTED_FROM_TAG: origin}.items():
            MlflowClient().set_model_version_tag(target.model.name, copied, key, value)
        why = f"from {origin}" + (f": {reason}" if reason else "")
        return promote_version(target, copied, split, force=force, reason=why)


@contextmanager
def _registry(uri: str) -> Iterator[None]:
    """MLflow's fluent API on ``uri`` for the block (it may have been bound to the source's)."""
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def _version(client: MlflowClient, name: str, version: str, environment: str):  # -> ModelVersion
    try:
        found = client.get_model_version(name, version)
    except MlflowException:
        raise RegistryError(f"Model '{name}' has no version '{version}' in '{environment}'. See `mlops --env {environment} compare`.") from None
    if found.tags.get(STATUS_TAG) != COMPLETE:
        raise RegistryError(f"Version {version} of '{name}' in '{environment}' has no gate decision yet (incomplete): it cannot move on.")
    return found


def _copy(client: MlflowClient, found, source: Settings, target: Settings) -> str:
    """The new version number in ``target``: MLflow's copy within one registry, else the files carried across."""
    if source.mlflow_tracking_uri == target.mlflow_tracking_uri:
        return str(MlflowClient().copy_model_version(f"models:/{found.name}/{found.version}", target.model.name).version)
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as folder:
        # The files' own location, resolved by the source's registry (a models:/ URI would ask the bound one).
        where = client.get_model_version_download_uri(found.name, found.version)
        local = mlflow.artifacts.download_artifacts(artifact_uri=where, dst_path=folder, tracking_uri=source.mlflow_tracking_uri)
        experiment = create_experiment(target.model.experiment, target)
        with mlflow.start_run(experiment_id=experiment, run_name=f"promoted {source.environment} v{found.version}") as run:
            mlflow.log_artifacts(str(Path(local)), artifact_path="model")
            mlflow.set_tags({PROMOTED_FROM_TAG: f"{source.environment}:{found.name}/{found.version}"})
        try:
            MlflowClient().create_registered_model(target.model.name)
        except MlflowException:
            pass  # it exists already
        created = MlflowClient().create_model_version(
            target.model.name, f"{run.info.artifact_uri}/model", run.info.run_id, description=found.description
        )
        return str(created.version)
