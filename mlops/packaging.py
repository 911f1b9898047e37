"""Package a registry alias as a Bento: the service, the model and pinned dependencies,
plus a Dockerfile, without a Docker engine.

The Bento lands in the BentoML store (``state_dir/bentoml/bentos``). Its Docker build
context (the Bento, its model and the Dockerfile ``bentoml containerize`` would use) is
assembled in ``state_dir/packages/<name>-<bento version>/``::

    result = package(settings)
    # docker build -t classifier {result.build_context}

Dependencies are pinned to the versions installed here and not re-resolved against the
package index (``lock_packages: false``): the image gets what was tested. The image's
service settings (the model, its folders, the contract, ``serving.*``) are one variable,
``MLOPS_SERVICE_SETTINGS`` (:class:`mlops.service.settings.ServiceSettings`).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import bentoml
import yaml

from mlops.config import Settings
from mlops.contract import contract_file
from mlops.project import entry_point
from mlops.service.settings import SERVICE_VARIABLE, ServiceSettings, service_settings
from mlops.serving import import_model, resolve_alias

__all__ = ["PINNED_DISTRIBUTIONS", "Package", "package", "pinned_requirements"]

# What the service imports at run time (mlflow-skinny carries the sklearn flavour).
PINNED_DISTRIBUTIONS = (
    "bentoml",
    "mlflow-skinny",
    "scikit-learn",
    "skops",
    "pandas",
    "numpy",
    "scipy",
    "pydantic",
    "pydantic-settings",
    "pyarrow",  # /arrow/predict
)
_LIBRARY = Path(__file__).resolve().parent
_IMAGE_HOME = Path("/home/bentoml")  # the image's writable folders: the prediction log and the label store


@dataclass(frozen=True)
class Package:
    """A built Bento and its Dockerfile."""

    bento_tag: str
    model_tag: str
    version: str
    build_context: Path
    dockerfile: Path


def pinned_requirements() -> list[str]:
    """``name==version`` for each of :data:`PINNED_DISTRIBUTIONS`, as installed here."""
    return [f"{name}=={version(name)}" for name in PINNED_DISTRIBUTIONS]


def package(settings: Settings, alias: str | None = None) -> Package:
    """Build a Bento for the version behind ``alias`` and write its Docker build context."""
    alias = alias or settings.serving.alias
    version = resolve_alias(settings.model.name, alias)
    model_tag = import_model(settings.model.name, version)
    out = settings.state_dir / "packages"
    out.mkdir(parents=True, exist_ok=True)
    source = _stage_sources(settings, out / "source")
    served = _image_settings(settings, model_tag)
    bentofile = _write_bentofile(settings, out / "bentofile.yaml", served, alias, version)
    with _handed(served):  # BentoML imports the service to build it; its module reads the settings
        bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(source))
    context = _build_context(bento, model_tag, out / f"{bento.tag.name}-{bento.tag.version}")
    return Package(str(bento.tag), model_tag, version, context, context / "Dockerfile")


def _image_settings(settings: Settings, model_tag: str) -> ServiceSettings:
    """The service's settings in the image: the project's, with the image's folders and contract."""
    contract = _contract_in_image(settings)  # the image checks requests and labels against the same contract
    served = service_settings(settings, model_tag, predictions_dir=_IMAGE_HOME / "predictions")
    image = {"labels_dir": _IMAGE_HOME / "labels", "contract": None if contract is None else Path(contract)}
    return served.model_copy(update=image)


@contextmanager
def _handed(served: ServiceSettings) -> Iterator[None]:
    """The settings in this process's environment while BentoML imports the service, as a server would have them."""
    before = os.environ.get(SERVICE_VARIABLE)
    os.environ.update(served.as_environment())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(SERVICE_VARIABLE, None)
        else:
            os.environ[SERVICE_VARIABLE] = before


def _write_bentofile(settings: Settings, path: Path, served: ServiceSettings, alias: str, version: str) -> Path:
    """A bentofile.yaml: BentoML's documented way to set the image's environment variables."""
    service = entry_point(settings, "service")
    include = [f"{service.module.split('.')[0]}/**/*.py", "mlops/**/*.py"]
    if served.contract is not None:
        include.append(served.contract.as_posix())
    # BentoML writes each as ``ARG NAME=value`` in the Dockerfile, the value shell-quoted: the JSON arrives as is.
    envs = [{"name": name, "value": value} for name, value in served.as_environment().items()]
    options = {
        "service": service.import_string,
        "name": settings.model.name,
        "labels": {"mlflow_model": settings.model.name, "mlflow_version": version, "alias": alias},
        "include": include,
        "python": {"packages": pinned_requirements(), "lock_packages": False},
        "docker": {"python_version": "3.11"},
        "envs": envs,
        "models": [served.bento_model],
    }
    path.write_text(yaml.safe_dump(options, sort_keys=False), encoding="utf-8")
    return path


def _stage_sources(settings: Settings, folder: Path) -> Path:
    """The build context: the project's service package, the ``mlops`` library and the contract.

    Staged in one folder because they live apart (a project's folder, the installed
    library), and so nothing else of the project (its data, its state) enters the image.
    """
    service = entry_point(settings, "service")
    package = service.module.split(".")[0]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "templates")
    shutil.copytree(service.root / package, folder / package, ignore=skip)
    shutil.copytree(_LIBRARY, folder / "mlops", ignore=skip)
    contract = _contract_in_image(settings)
    if contract is not None:
        (folder / contract).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(contract_file(settings.data.contract), folder / contract)
    return folder


def _contract_in_image(settings: Settings) -> str | None:
    """Where the image keeps the data contract: its path in the project, else ``data/contracts/<file>``."""
    path = contract_file(settings.data.contract)
    if not path.is_file():
        return None
    try:
        return path.resolve().relative_to(settings.project.root.resolve()).as_posix()
    except ValueError:
        return f"data/contracts/{path.name}"


def _build_context(bento: Any, model_tag: str, folder: Path) -> Path:
    """The Bento, its model under ``models/`` and the Dockerfile: ``docker build`` needs no more.

    The same layout ``bentoml containerize`` assembles in a temporary folder.
    """
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bento.path, folder)
    model = bentoml.models.get(model_tag)
    version = str(model.tag.version)  # a stored model's tag always has one
    shutil.copytree(model.path, folder / "models" / model.tag.name / version)
    (folder / "models" / model.tag.name / "latest").write_text(version, encoding="utf-8")
    bentoml.container.get_containerfile(str(bento.tag), output_path=str(folder / "Dockerfile"))
    return folder
