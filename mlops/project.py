"""A project: a folder with ``mlops.yaml``, ``flows/``, ``models/``, ``data/``, ``notebooks/``, ``tests/``.

The CLI, the API and notebooks find the project's code through the entry points in
``mlops.yaml`` (``project.training`` etc., Prefect's ``file.py:name`` form) and import
it from the project folder, never as installed packages. An entry point left at its
default whose file the project lacks is the framework's own: the reference project's
file, shipped inside :mod:`mlops` under ``templates/project``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from mlops.config import ProjectConfig, Settings
from mlops.config import load_settings as load
from mlops.environment import bind_tools
from mlops.errors import ConfigError

__all__ = ["TEMPLATE", "EntryPoint", "entry_point", "failing_project_line", "load_entry_point", "load_flow", "load_settings"]

# The reference project's files as the installed framework carries them (the flows,
# the service, the notebook; symbolic links in a checkout).
TEMPLATE = Path(__file__).resolve().parent / "templates" / "project"

EntryName = Literal["training", "monitoring", "scoring", "service"]


class EntryPoint:
    """Where one entry point lives: its file, the name in it, and the folder it imports from."""

    def __init__(self, path: Path, name: str, root: Path, default: bool) -> None:
        self.path, self.name, self.root, self.default = path, name, root, default

    @property
    def module(self) -> str:
        """The dotted module name relative to :attr:`root`, e.g. ``models.service``."""
        return ".".join(self.path.relative_to(self.root).with_suffix("").parts)

    @property
    def import_string(self) -> str:
        """``module:name``, as BentoML takes a service from its working directory."""
        return f"{self.module}:{self.name}"

    def __repr__(self) -> str:
        return f"EntryPoint({self.path}:{self.name})"


def load_settings(
    config: str | os.PathLike[str] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    project: str | os.PathLike[str] | None = None,
    environment: str | None = None,
    **overrides: Any,
) -> Settings:
    """The project's settings, with MLflow, Prefect and BentoML bound to its state folder (telemetry off).

    What the CLI does before every command, for scripts and notebooks: ``mlops.yaml``
    of ``project`` (default: the working directory) or ``config``, its profile
    ``environment`` (default: ``$MLOPS_ENV``, else ``local``), the ``MLOPS_*``
    environment, then ``overrides`` (sections as dicts, e.g. ``model={"seed": 1}``).
    """
    settings = load(config, state_dir, project, environment, **overrides)
    bind_tools(settings)
    return settings


def entry_point(settings: Settings, name: EntryName) -> EntryPoint:
    """The file and name behind ``project.<name>``; a default the project lacks is the framework's."""
    project = settings.project
    spec = getattr(project, name)
    relative, attribute = spec.rsplit(":", 1)
    root = project.root.resolve()
    path = (root / relative).resolve()
    if not path.is_relative_to(root):
        raise ConfigError(
            f"project.{name} is {spec!r}, outside the project folder {root}. Name a file inside it "
            "(relative to the folder of mlops.yaml), or set project.root to the folder that holds it."
        )
    if path.is_file():
        return EntryPoint(path, attribute, root, default=False)
    if spec == ProjectConfig.model_fields[name].default and (TEMPLATE / relative).is_file():
        return EntryPoint(TEMPLATE / relative, attribute, TEMPLATE, default=True)
    raise ConfigError(
        f"project.{name} is {spec!r}, but {path} does not exist. Create it (mlops init writes one) "
        f"or fix project.{name} in mlops.yaml."
    )


def load_entry_point(settings: Settings, name: EntryName) -> Any:
    """Import the entry point's file from its project folder and return the object it names."""
    point = entry_point(settings, name)
    module = _import(point)
    try:
        return getattr(module, point.name)
    except AttributeError:
        raise ConfigError(f"{point.path} has no {point.name!r} (project.{name} in mlops.yaml).") from None


def load_flow(settings: Settings, name: Literal["training", "monitoring", "scoring"]) -> Any:
    """The project's flow (``project.training`` …): a Prefect flow, called like the function it wraps.

    It runs its tasks on the configured task runner (``orchestration.task_runner``: threads, or a Dask cluster).
    """
    from prefect import Flow

    from mlops.task_runners import with_task_runner  # Prefect and Dask: only once the tools are bound

    found = load_entry_point(settings, name)
    if not isinstance(found, Flow):
        point = entry_point(settings, name)
        raise ConfigError(f"{point.path}:{point.name} is not a Prefect flow: decorate it with @flow.")
    return with_task_runner(found, settings)


def _import(point: EntryPoint) -> ModuleType:
    """The module of ``point``, imported once per file; a failing import names the file and line (exit 2)."""
    name = f"_mlops_default.{point.module}" if point.default else point.module
    loaded = sys.modules.get(name)
    if loaded is not None and os.path.realpath(getattr(loaded, "__file__", "") or "") == os.path.realpath(point.path):
        return loaded
    if not point.default:  # the framework's defaults live under a private name: nothing to shadow
        if str(point.root) not in sys.path:
            sys.path.insert(0, str(point.root))  # the project's own helper modules import as in its tests
        _forget_other_project(point.module.split(".")[0], point.root)
    spec = importlib.util.spec_from_file_location(name, point.path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{point.path}: not a Python file that can be imported; name a .py file in mlops.yaml's project section.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        raise ConfigError(f"{exc.filename}:{exc.lineno}: {exc.msg}. Fix the file and run the command again.") from None
    except Exception as exc:
        del sys.modules[name]
        line = _line_in(point.path, exc)
        raise ConfigError(
            f"{point.path}:{line}: importing it failed: {type(exc).__name__}: {exc}. Fix the file and run the command again."
        ) from None
    return module


def _forget_other_project(package: str, root: Path) -> None:
    """A ``flows`` or ``models`` package imported from another folder would shadow this project's."""
    loaded = sys.modules.get(package)
    location = getattr(loaded, "__file__", None) or next(iter(getattr(loaded, "__path__", [])), None)
    if loaded is not None and location and root not in Path(location).parents:
        for key in [key for key in sys.modules if key == package or key.startswith(package + ".")]:
            del sys.modules[key]


def _line_in(path: Path, exc: BaseException) -> int | str:
    """The line of ``path`` the failure passed through last (the user's line, not the library's)."""
    real = os.path.realpath(path)
    frames = [frame for frame in traceback.extract_tb(exc.__traceback__) if os.path.realpath(frame.filename) == real]
    line = frames[-1].lineno if frames else None
    return line if line is not None else "?"


def failing_project_line(settings: Settings, exc: BaseException) -> traceback.FrameSummary | None:
    """The last line of the project's own code an exception passed through, when the framework did not raise it.

    A crash there (in the project's code or a tool it called itself) is the user's to fix,
    reported with its file and line; one that passed through the framework after the
    project's last line keeps its traceback (a bug report), even when a flow of the project
    called it.
    """
    root, library = os.path.realpath(settings.project.root), os.path.realpath(Path(__file__).parent)

    def where(frame: traceback.FrameSummary) -> str:
        path = os.path.realpath(frame.filename)
        if path.startswith(library + os.sep):
            return "framework"
        return "project" if path.startswith(root + os.sep) and ".venv" not in Path(frame.filename).parts else "tool"

    frames = [(frame, where(frame)) for frame in traceback.extract_tb(exc.__traceback__)]
    last = max((index for index, (_, kind) in enumerate(frames) if kind == "project"), default=None)
    if last is None or any(kind == "framework" for _, kind in frames[last + 1 :]):
        return None
    return frames[last][0]
