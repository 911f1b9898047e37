"""Importing a registered version into the BentoML store is verified against the MLflow
artifact: a corrupt artifact is refused with its cause and leaves nothing cached, and once
the artifact is restored the version imports and serves again. Real MLflow store (SQLite
under tmp_path), real BentoML store and a real ``bentoml serve`` on 127.0.0.1."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from registered import features, register

from mlops.config import Settings, load_settings
from mlops.environment import tool_environment
from mlops.errors import ServingError
from mlops.serving import CHECKSUM_LABEL, files_sha256, free_port, import_model, start_server


def _stored(tag: str):
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(tag)
    except NotFound:
        return None


def _artifact_file(settings, name: str) -> Path:
    """The version's ``name`` file in the MLflow artifact store (the only version registered)."""
    (path,) = settings.mlflow_artifact_dir.rglob(name)
    return path


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, mlflow_db_template: Path) -> Iterator[tuple[Settings, str]]:
    """One registered version for the module (each test leaves its artifact as it found it)."""
    settings = load_settings(state_dir=tmp_path_factory.mktemp("model-import") / "state")
    settings.state_dir.mkdir(parents=True)
    shutil.copy(mlflow_db_template, settings.state_dir / "mlflow.db")
    with tool_environment(settings):
        yield settings, register(settings, C=1.0)


@pytest.fixture
def settings(registry) -> Settings:
    return registry[0]


@pytest.fixture
def version(registry) -> str:
    return registry[1]


def test_import_model__records_the_checksum_and_reimports_when_the_artifact_changes(settings, version):
    model_file = _artifact_file(settings, "model.skops")
    original = model_file.read_bytes()
    tag = import_model(settings.model.name, version)
    digest = _stored(tag).info.labels[CHECKSUM_LABEL]
    assert digest == files_sha256(model_file.parent)
    assert import_model(settings.model.name, version) == tag and _stored(tag).info.labels[CHECKSUM_LABEL] == digest

    model_file.write_bytes(b"not a model")  # the artifact is replaced behind the cache's back
    import_model(settings.model.name, version)
    stored = _stored(tag)
    assert stored.info.labels[CHECKSUM_LABEL] != digest
    assert (Path(stored.path_of("mlflow_model")) / "model.skops").read_bytes() == b"not a model"

    model_file.write_bytes(original)  # restored: the cache follows the artifact again
    import_model(settings.model.name, version)
    assert _stored(tag).info.labels[CHECKSUM_LABEL] == digest


def test_import_model__a_damaged_store_copy_is_replaced(settings, version):
    tag = import_model(settings.model.name, version)
    copy = Path(_stored(tag).path_of("mlflow_model")) / "model.skops"
    original = copy.read_bytes()
    copy.write_bytes(original[: len(original) // 2])  # truncated in the BentoML store

    assert import_model(settings.model.name, version) == tag
    assert (Path(_stored(tag).path_of("mlflow_model")) / "model.skops").read_bytes() == original


def test_import_model__an_artifact_bentoml_cannot_read_is_refused_and_not_kept(settings, version):
    from mlops.serving import _run_id

    mlmodel = _artifact_file(settings, "MLmodel")
    saved = mlmodel.read_bytes()
    mlmodel.write_text("flavors: [this is: not, an MLmodel", encoding="utf-8")
    tag = f"{settings.model.name}:v{version}-{_run_id(settings.model.name, version)[:8]}"

    with pytest.raises(ServingError, match=f"Version {version} of .* cannot be imported into the BentoML store") as refused:
        import_model(settings.model.name, version)

    assert "Traceback" not in str(refused.value) and "BentoML store?" not in str(refused.value)
    assert _stored(tag) is None
    mlmodel.write_bytes(saved)
    assert import_model(settings.model.name, version) == tag


@pytest.mark.slow
def test_start_server__corrupt_artifact_is_rejected_with_its_cause_then_serves_once_restored(settings, version):
    model_file = _artifact_file(settings, "model.skops")
    backup = model_file.with_suffix(".backup")
    shutil.copyfile(model_file, backup)
    model_file.write_bytes(b"\x00garbage\x00" * 100)
    tag = import_model(settings.model.name, version)

    started = time.monotonic()
    with pytest.raises(ServingError, match="failed to start: .*cannot be loaded as a scikit-learn model") as rejected:
        start_server(settings, tag, port=free_port())
    print(f"rejected in {time.monotonic() - started:.1f} s")  # measured, never asserted

    assert "BentoML store?" not in str(rejected.value) and "Traceback" not in str(rejected.value)
    assert _stored(tag) is None, "the rejected import was left in the BentoML store"
    shutil.copyfile(backup, model_file)
    tag = import_model(settings.model.name, version)
    started = time.monotonic()
    with start_server(settings, tag, port=free_port()) as server:
        print(f"restored version ready in {time.monotonic() - started:.1f} s")
        answer = httpx.post(f"{server.url}/predict", json={"records": features().head(2).to_dict("records")}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 2
