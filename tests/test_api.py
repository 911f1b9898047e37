"""The public Python API: what ``mlops`` exports, the README's custom flow as written, and project code.

The custom flow is the exact code of the README's ``<!-- custom-flow -->`` block, run
as a user runs it: a script in a project folder, with no setup of its own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mlops
from mlops import tasks
from mlops.config import load_settings

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")

PUBLIC = {"Candidate", "MonitoringOutcome", "ScoringOutcome", "Settings", "TrainingOutcome", "init_project",
          "load_flow", "load_settings", "tasks"}
STAGES = {"load_data", "validate_data", "validation_failed", "split_data", "train_candidates", "register_model",
          "load_recent", "gate", "write_model_card", "package_model", "deploy_model", "load_current",
          "load_reference", "validate_current", "measure_drift", "measure_quality", "decide_retrain", "send_alert"}


def _user_env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "PREFECT_"))}, **extra}


def test_public_api__all_names_exactly_what_is_documented():
    assert set(mlops.__all__) == PUBLIC
    assert all(getattr(mlops, name) is not None for name in mlops.__all__)
    assert set(tasks.__all__) >= STAGES
    assert all(hasattr(tasks, name) for name in tasks.__all__)


def test_public_api__every_stage_is_a_prefect_task_naming_the_function_it_wraps():
    from prefect import Task

    for name in STAGES - {"validation_failed"}:
        stage = getattr(tasks, name)
        assert isinstance(stage, Task), name
        assert stage.fn.__doc__, f"{name} has no docstring"


def test_public_api__import_mlops_is_light():
    code = "import mlops, sys; print(*[m for m in ('prefect', 'mlflow', 'pandas', 'bentoml') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def _readme_custom_flow() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    after = text.split("<!-- custom-flow -->", 1)[1]
    return re.search(r"```python\n(.*?)```", after, re.S).group(1)


@pytest.mark.slow
def test_readme_custom_flow__runs_as_written_in_a_new_project(tmp_path):
    project = mlops.init_project(tmp_path / "proj").root
    script = project / "my_flow.py"
    script.write_text(_readme_custom_flow(), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=project, capture_output=True, text=True,
                            env=_user_env(), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "no champion yet"
    # Bound to the project's state folder, as the CLI is: `mlops compare` finds the run.
    assert (project / ".mlops" / "mlflow.db").is_file() and not (project / "mlflow.db").exists()
    compared = subprocess.run([str(MLOPS), "compare"], cwd=project, capture_output=True, text=True, env=_user_env())
    assert compared.returncode == 0, compared.stderr
    assert "champion" in compared.stdout


def test_project__a_flow_file_that_fails_to_import_names_the_file_and_line(tmp_path):
    project = mlops.init_project(tmp_path / "proj").root
    flow_file = project / "flows" / "training.py"
    lines = flow_file.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("from mlops"))
    lines.insert(at, "from mlops import no_such_thing")
    flow_file.write_text("\n".join(lines) + "\n")
    result = subprocess.run([str(MLOPS), "train"], cwd=project, capture_output=True, text=True, env=_user_env(), timeout=120)
    assert result.returncode == 2, result.stderr
    assert f"{flow_file}:{at + 1}:" in result.stderr
    assert "no_such_thing" in result.stderr and "Traceback" not in result.stderr


def test_project__a_syntax_error_in_the_service_names_the_file_and_line(tmp_path):
    project = mlops.init_project(tmp_path / "proj").root
    service = project / "models" / "service.py"
    lines = service.read_text().splitlines()
    service.write_text("\n".join([*lines, "def broken(:"]) + "\n")
    code = ("import mlops; from mlops.project import load_entry_point; "
            "load_entry_point(mlops.load_settings(), 'service')")
    result = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True,
                            env=_user_env(), timeout=120)
    assert f"ConfigError: {service}:{len(lines) + 1}: " in result.stderr


def test_project__an_entry_point_named_in_the_config_must_exist(tmp_path):
    project = mlops.init_project(tmp_path / "proj").root
    config = project / "mlops.yaml"
    config.write_text(config.read_text().replace("flows/training.py:training_flow", "flows/mine.py:my_flow"))
    result = subprocess.run([str(MLOPS), "train"], cwd=project, capture_output=True, text=True, env=_user_env(), timeout=120)
    assert result.returncode == 2
    assert "project.training" in result.stderr and "flows/mine.py" in result.stderr


def test_project__the_project_option_finds_the_project_from_anywhere(tmp_path):
    project = mlops.init_project(tmp_path / "proj").root
    result = subprocess.run([str(MLOPS), "--project", str(project), "config"], cwd=tmp_path, capture_output=True,
                            text=True, env=_user_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(project / "data" / "train.csv") in result.stdout


def test_project__without_flows_the_framework_defaults_are_used(tmp_path):
    (tmp_path / "mlops.yaml").write_text("data:\n  target: target\n")
    settings = load_settings(project=tmp_path)
    from mlops.project import TEMPLATE, entry_point

    point = entry_point(settings, "training")
    assert point.default and point.path == TEMPLATE / "flows" / "training.py"
    assert mlops.load_flow(settings, "training").name == "training"


def test_load_settings__binds_the_tools_to_the_state_folder_even_when_they_are_imported_first(tmp_path):
    """In a fresh process, as a script or a notebook runs: the tools are imported before the settings load."""
    code = f"""
import os, mlflow, prefect.settings, mlops
settings = mlops.load_settings(state_dir={str(tmp_path / "state")!r})
assert mlflow.get_tracking_uri() == settings.mlflow_tracking_uri, mlflow.get_tracking_uri()
assert str(prefect.settings.get_current_settings().home) == str(settings.prefect_home)
assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true" and os.environ["DO_NOT_TRACK"] == "1"
print("bound")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env=_user_env(), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "bound"


def test_project__found_from_a_folder_inside_it(tmp_path):
    project = mlops.init_project(tmp_path / "proj").root
    result = subprocess.run([str(MLOPS), "config"], cwd=project / "notebooks", capture_output=True, text=True,
                            env=_user_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    assert str(project / ".mlops") in result.stdout and str(project / "data" / "train.csv") in result.stdout


def test_project__a_crash_in_the_projects_flow_names_its_line_and_exits_2(tmp_path):
    project = mlops.init_project(tmp_path / "proj").root
    flow_file = project / "flows" / "training.py"
    text = flow_file.read_text()
    anchor = "    result, report = tasks.validate_data(frame, settings, data_path)"
    flow_file.write_text(text.replace(anchor, "    frame = frame.drop(columns=['no such col'])\n" + anchor))
    line = flow_file.read_text().splitlines().index("    frame = frame.drop(columns=['no such col'])") + 1
    result = subprocess.run([str(MLOPS), "train"], cwd=project, capture_output=True, text=True, env=_user_env(), timeout=300)
    assert result.returncode == 2
    lines = [json.loads(each) for each in result.stderr.splitlines() if each.strip()]  # JSON: stderr is not a terminal
    errors = [each["message"] for each in lines if each["logger"] == "mlops.cli" and each["level"] == "error"]
    assert [error.startswith(f"{flow_file}:{line}: KeyError") for error in errors] == [True], result.stderr
    text = subprocess.run([str(MLOPS), "--log-format", "text", "train"], cwd=project, capture_output=True, text=True,
                          env=_user_env(), timeout=300)  # fmt: skip
    assert f"error: {flow_file}:{line}: KeyError" in text.stderr and "Traceback" not in text.stderr, text.stderr


def test_failing_project_line__the_project_is_blamed_for_its_own_lines_not_for_the_frameworks(tmp_path):
    from mlops.project import failing_project_line

    (tmp_path / "mine.py").write_text(
        "import json\n"
        "from mlops import metrics\n"
        "def own():\n    raise KeyError('no such column')\n"
        "def through_a_tool():\n    json.loads('{')\n"
        "def through_the_framework():\n    metrics.score_labels(None, None, None)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import mine
    finally:
        sys.path.remove(str(tmp_path))
    settings = load_settings(state_dir=tmp_path / "state", project=tmp_path)

    def blamed(function):
        try:
            function()
        except Exception as exc:  # noqa: BLE001 — what the CLI catches
            line = failing_project_line(settings, exc)
            return None if line is None else (Path(line.filename).name, line.lineno)
        raise AssertionError("did not raise")

    assert blamed(mine.own) == ("mine.py", 4)
    assert blamed(mine.through_a_tool) == ("mine.py", 6)  # the project called the tool itself
    assert blamed(mine.through_the_framework) is None  # a framework bug keeps its traceback
