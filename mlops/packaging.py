"""Package a registry alias as a Bento: the service, the model and pinned dependencies,
plus a Dockerfile, without a Docker engine.

The Bento lands in the BentoML store (``state_dir/bentoml/bentos``). Its Docker build
context (the Bento, its model and the Dockerfile ``bentoml containerize`` would use) is
assembled in ``state_dir/packages/<name>-<bento version>/``::

    result = package(settings)
    # docker build -t classifier {result.build_context}

Dependencies are pinned to the versions installed here and not re-resolved against the
package index (``lock_packages: false``): the image gets what was tested.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.config import Settings
from mlops.contract import contract_file
from mlops.project import entry_point
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
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in PINNED_DISTRIBUTIONS]


def package(settings: Settings, alias: str | None = None) -> Package:
    """Build a Bento for the version behind ``alias`` and write its Docker build context."""
    import bentoml

    alias = alias or settings.serving.alias
    version = resolve_alias(settings.model.name, alias)
    model_tag = import_model(settings.model.name, version)
    out = settings.state_dir / "packages"
    out.mkdir(parents=True, exist_ok=True)
    source = _stage_sources(settings, out / "source")
    bentofile = _write_bentofile(settings, out / "bentofile.yaml", model_tag, alias, version)
    bento = bentoml.bentos.build_bentofile(str(bentofile), build_ctx=str(source))
    context = _build_context(bento, model_tag, out / f"{bento.tag.name}-{bento.tag.version}")
    return Package(str(bento.tag), model_tag, version, context, context / "Dockerfile")


def _write_bentofile(settings: Settings, path: Path, model_tag: str, alias: str, version: str) -> Path:
    """A bentofile.yaml: BentoML's documented way to set the image's environment variables."""
    import yaml

    service = entry_point(settings, "service")
    include, envs = [f"{service.module.split('.')[0]}/**/*.py", "mlops/**/*.py"], [
        {"name": "MLOPS_BENTO_MODEL", "value": model_tag},
        {"name": "MLOPS_PREDICTIONS_DIR", "value": "/home/bentoml/predictions"},
        {"name": "MLOPS_LABELS_DIR", "value": "/home/bentoml/labels"},
    ]
    contract = _contract_in_image(settings)
    if contract is not None:  # the image checks requests and labels against the same contract
        include.append(contract)
        envs.append({"name": "MLOPS_CONTRACT", "value": contract})
    options = {
        "service": service.import_string,
        "name": settings.model.name,
        "labels": {"mlflow_model": settings.model.name, "mlflow_version": version, "alias": alias},
        "include": include,
        "python": {"packages": pinned_requirements(), "lock_packages": False},
        "docker": {"python_version": "3.11"},
        "envs": envs,
        "models": [model_tag],
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
    import bentoml

    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bento.path, folder)
    model = bentoml.models.get(model_tag)
    version = str(model.tag.version)  # a stored model's tag always has one
    shutil.copytree(model.path, folder / "models" / model.tag.name / version)
    (folder / "models" / model.tag.name / "latest").write_text(version, encoding="utf-8")
    bentoml.container.get_containerfile(str(bento.tag), output_path=str(folder / "Dockerfile"))
    return folder
