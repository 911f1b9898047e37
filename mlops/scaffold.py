"""``mlops init``: a new project, from the reference project's files, that runs green without edits.

The project gets the framework's flows, service, notebook and a test to edit, its
data (the user's file, or the bundled sample) with a contract drafted from it, a
config naming both, and a Makefile with the same two commands as this repository
(``make demo``, ``make test``), which installs the framework from where it is installed
now (this checkout, or the same version from the package index) with the versions it
runs on pinned in ``requirements.lock``.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import distributions, version
from pathlib import Path

import yaml

from mlops import contract
from mlops import data as tables
from mlops.config import SAMPLE_DATASET, ProjectConfig, StackConfig, dataset_name
from mlops.data import write_sample_data
from mlops.errors import ConfigError
from mlops.project import TEMPLATE

__all__ = ["NewProject", "init_project"]

# Copied as they are (the reference project's code), and filled in (the project's own texts).
_COPIED = ("flows", "models", "notebooks", "tests")
_FILLED = ("Makefile", "README.md", "pyproject.toml")
_SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")


@dataclass(frozen=True)
class NewProject:
    """What :func:`init_project` wrote."""

    root: Path
    config: Path
    data: Path
    contract: Path
    task: str
    target: str


def init_project(directory: str | Path, data: str | Path | None = None, target: str | None = None) -> NewProject:
    """Scaffold a project in ``directory`` (new or empty) for ``data`` (default: the bundled sample).

    ``target`` is the column to predict (required with ``data``). Nothing is written when
    the folder holds files, the data cannot be read, or the target is not a column of it.
    """
    root = Path(directory).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{directory} exists and is not an empty folder: nothing written. Choose a new folder.")
    if data is not None:
        if target is None:
            raise ConfigError("--data needs --target: the column to predict.")
        frame = tables.load_table(data)  # unreadable: a DataError naming the file, before anything is written
        if target not in frame.columns:
            raise ConfigError(f"{target!r} is not a column of {data}; its columns: {', '.join(map(str, frame.columns[:20]))}.")
        name = dataset_name(Path(data))
    else:
        name, target = SAMPLE_DATASET, "target"
        frame = None
    drafted = contract.draft_contract(frame if frame is not None else tables.make_sample_data()[0], target, name)
    staging = root.with_name(f".{root.name}.init")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        files = _write(staging, name, Path(data) if data is not None else None, target, drafted)
        staging.replace(root) if not root.exists() else _move_into(staging, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return NewProject(root, root / "mlops.yaml", root / files["data"], root / files["contract"], drafted.task, target)


def _write(folder: Path, name: str, data: Path | None, target: str, drafted) -> dict[str, str]:
    folder.mkdir(parents=True)
    for part in _COPIED:
        shutil.copytree(TEMPLATE / part, folder / part, ignore=_SKIP)
    (folder / "data").mkdir()
    if data is None:
        training, current = write_sample_data(folder / "data")
        config = {"name": name, "training": "data/train.csv", "current": "data/current.csv", "target": target}
    else:
        training = folder / "data" / data.name
        shutil.copyfile(data, training)
        config = {"training": f"data/{data.name}", "target": target}
    contract_path = contract.write_contract(drafted, folder / "data" / "contracts" / f"{name}.yaml")
    contract.write_suite(contract.to_suite(drafted), folder / "data" / "expectations" / f"{name}.json")
    fills = {"name": name, "data": config["training"], "target": target, "mlops_source": _framework_source()}
    for part in _FILLED:
        text = (TEMPLATE / part).read_text(encoding="utf-8")
        for key, value in fills.items():
            text = text.replace("{" + key + "}", value)
        (folder / part).write_text(text, encoding="utf-8")
    shutil.copyfile(TEMPLATE / "gitignore", folder / ".gitignore")
    (folder / "mlops.yaml").write_text(_config_text(config), encoding="utf-8")
    (folder / "requirements.lock").write_text(_pinned_environment(), encoding="utf-8")
    return {"data": str(training.relative_to(folder)), "contract": str(contract_path.relative_to(folder))}


def _config_text(data: dict[str, str]) -> str:
    header = (
        "# The project's configuration. `mlops config` prints every setting with the value in use,\n"
        "# `mlops config --schema` documents them. Entry points (defaults shown) name the project's code.\n"
    )

    entry_points = {name: field.default for name, field in ProjectConfig.model_fields.items() if name != "root"}
    body = {"data": data, "project": entry_points}
    profiles = (
        "# Profiles (`mlops --env staging train`, docs/cluster.md): staging is the stack `mlops stack up` starts.\n"
        + yaml.safe_dump({"environments": {"staging": StackConfig().profile()}}, sort_keys=False)
    )
    return header + yaml.safe_dump(body, sort_keys=False) + profiles


def _framework_source() -> str:
    """Where ``make install`` takes the framework from: this checkout if it runs from one, else the index."""
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "mlops" / "__init__.py").is_file():
        return str(checkout)
    return f"mlops=={version('mlops')}"


def _pinned_environment() -> str:
    """The framework's locked dependencies (``uv export`` of this checkout's ``uv.lock``), else what is installed.

    The lock's own list carries each package's platform markers; a framework installed from
    a wheel has no lock, so the versions it runs on here are pinned instead.
    """
    checkout = Path(__file__).resolve().parents[1]
    uv, lock = checkout / ".uv" / "bin" / "uv", checkout / "uv.lock"
    header = "# The framework's dependencies at the versions it is tested with (mlops itself: MLOPS_SOURCE).\n"
    if uv.is_file() and lock.is_file():
        exported = subprocess.run(
            [str(uv), "export", "--frozen", "--all-groups", "--no-hashes", "--no-emit-project", "--quiet"],
            cwd=checkout, capture_output=True, text=True, timeout=120,
        )
        if exported.returncode == 0:
            return header + exported.stdout

    pins = {}
    for dist in distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name and name != "mlops":
            pins[name] = f"{name}=={dist.version}"
    pins.setdefault("pytest", "pytest")
    return header + "\n".join(sorted(pins.values())) + "\n"


def _move_into(staging: Path, root: Path) -> None:
    for item in staging.iterdir():
        item.replace(root / item.name)
