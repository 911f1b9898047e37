"""``mlops init``: a new project on the user's own table runs green without edits.

The slow test is the issue's "done when", as a user types it in an empty folder:
``mlops init myproj --data FILE --target COL && cd myproj && make demo && make test``.
The project's Makefile installs its own environment (requirements.lock, then the
framework from this checkout, built as a wheel); uv runs offline from its cache, which
this checkout's ``make install`` filled, so no test needs the network.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from datasets import write

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")


def _mlops(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "PREFECT_"))}
    return subprocess.run([str(MLOPS), *args], cwd=cwd, capture_output=True, text=True, env=environment, timeout=120)


def test_init__writes_a_project_for_the_users_table(tmp_path):
    train, _, spec = write("churn", tmp_path)
    result = _mlops("init", "myproj", "--data", str(train), "--target", spec.target, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    project = tmp_path / "myproj"
    for part in ("mlops.yaml", "Makefile", "README.md", "requirements.lock", "flows/training.py", "flows/monitoring.py",
                 "models/service.py", "notebooks/walkthrough.ipynb", "tests/test_project.py", f"data/{train.name}"):
        assert (project / part).is_file(), part
    config = yaml.safe_load((project / "mlops.yaml").read_text())
    assert config["data"] == {"training": f"data/{train.name}", "target": spec.target}
    contract = yaml.safe_load((project / "data" / "contracts" / f"{train.stem}.yaml").read_text())
    assert contract["target"] == spec.target and contract["task"] == "classification"
    assert "cd myproj && make demo && make test" in result.stdout
    assert str(REPO) in (project / "Makefile").read_text(), "the framework is installed from this checkout"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--data", "missing.csv", "--target", "y"), "does not exist"),
        (("--data", "table.csv"), "--data needs --target"),
        (("--data", "table.csv", "--target", "nope"), "'nope' is not a column of table.csv"),
    ],
)
def test_init__bad_arguments_are_a_message_and_nothing_is_written(tmp_path, args, message):
    (tmp_path / "table.csv").write_text("a,y\n1,0\n2,1\n")
    result = _mlops("init", "myproj", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "myproj").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"], "no staging folder left behind"


def test_init__a_folder_with_files_is_never_overwritten(tmp_path):
    (tmp_path / "myproj").mkdir()
    (tmp_path / "myproj" / "notes.txt").write_text("mine")
    result = _mlops("init", "myproj", cwd=tmp_path)
    assert result.returncode == 2 and "not an empty folder" in result.stderr
    assert [p.name for p in (tmp_path / "myproj").iterdir()] == ["notes.txt"]


@pytest.mark.slow
def test_install__the_wheel_ships_only_mlops_with_its_project_templates(tmp_path):
    uv = REPO / ".uv" / "bin" / "uv"
    subprocess.run([str(uv), "build", "--wheel", "--offline", "--out-dir", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp_path.glob("mlops-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names if not name.startswith("mlops-")} == {"mlops"}
    for template in ("flows/training.py", "flows/monitoring.py", "models/service.py", "notebooks/walkthrough.ipynb"):
        assert f"mlops/templates/project/{template}" in names


@pytest.mark.slow
def test_init__make_demo_and_make_test_pass_in_the_new_project(tmp_path):
    train, _, spec = write("churn", tmp_path)
    assert _mlops("init", "myproj", "--data", str(train), "--target", spec.target, cwd=tmp_path).returncode == 0
    project = tmp_path / "myproj"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "PREFECT_", "VIRTUAL_ENV"))}
    environment |= {"UV_OFFLINE": "1"}
    # Bytecode compiled lazily: the test checks the commands, not the install-time compile (minutes here).
    make = ["make", f"UV={REPO / '.uv' / 'bin' / 'uv'}", "UV_COMPILE_BYTECODE=0"]
    demo = subprocess.run([*make, "demo"], cwd=project, capture_output=True, text=True, env=environment, timeout=900)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "Traceback" not in demo.stdout + demo.stderr
    text = " ".join(re.sub("[│┌┐└┘─┬┴├┤┼]", " ", demo.stdout).split())  # the table's cells, unwrapped
    assert "0 failed requests" in text and f"rows of {train.name}, unchanged" in text
    assert (project / ".venv" / "bin" / "mlops").is_file(), "the project's own environment ran the demo"
    tests = subprocess.run([*make, "test"], cwd=project, capture_output=True, text=True, env=environment, timeout=900)
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert "3 passed" in tests.stdout


@pytest.mark.parametrize(("column", "why"), [("id", "is unique per row (an identifier)"), ("signup", "holds dates or times")])
def test_init__an_identifier_or_a_date_is_refused_as_the_target(tmp_path, column, why):
    rows = [f"c-{i},2024-01-{i % 28 + 1:02d},{i % 7},{'yes' if i % 3 else 'no'}" for i in range(60)]
    (tmp_path / "table.csv").write_text("id,signup,visits,churned\n" + "\n".join(rows) + "\n")
    result = _mlops("init", "myproj", "--data", "table.csv", "--target", column, cwd=tmp_path)
    assert result.returncode == 2
    assert f"'{column}' cannot be the target: it {why}" in result.stderr
    assert not (tmp_path / "myproj").exists()
