"""The walkthrough notebook runs top to bottom, as a user runs it, so it cannot rot.

Executed with nbclient in a Jupyter kernel of the project's environment (the
interpreter running the tests), from the project's ``notebooks/`` folder, against
a temporary state folder (``MLOPS_STATE_DIR``). ``mlops init`` copies the notebook
into every new project, so it also runs unchanged in scaffolded projects on other
data: regression without a current batch, multi-class classification with one.
"""

from __future__ import annotations

import os
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"
KERNEL_CHECK = "import sys\nprint('kernel prefix:', sys.prefix)"


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh state folder, and a ``python3`` kernel that is this interpreter's ipykernel.

    The kernel inherits the environment: ``MLOPS_STATE_DIR`` (nothing else of the
    user's ``MLOPS_*``), and ``JUPYTER_PATH`` so that ``python3`` resolves to a spec
    whose argv is ``sys.executable``, whatever other kernels the machine has.
    """
    from ipykernel.kernelspec import write_kernel_spec

    for name in [name for name in os.environ if name.startswith("MLOPS_")]:
        monkeypatch.delenv(name)
    state = tmp_path / "state"
    monkeypatch.setenv("MLOPS_STATE_DIR", str(state))
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / "python3")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return state


def run_notebook(path: Path):
    """Execute ``path`` from its own folder; the executed notebook (a failing cell raises CellExecutionError)."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(KERNEL_CHECK))
    client = NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
              if output.output_type == "error"]
    assert not errors, errors
    assert f"kernel prefix: {sys.prefix}" in _text(notebook.cells[-1]), "the kernel is not the project's environment"
    return notebook


def _cell(notebook, marker: str):
    """The one code cell whose source contains ``marker``."""
    found = [cell for cell in notebook.cells if cell.cell_type == "code" and marker in cell.source]
    assert len(found) == 1, f"{len(found)} code cells contain {marker!r}"
    return found[0]


def _text(cell) -> str:
    """What a cell printed and displayed, as plain text."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


class _Table(HTMLParser):
    """The rows of a pandas HTML table: header names, then one dict per body row."""

    def __init__(self) -> None:
        super().__init__()
        self.header: list[str] = []
        self.rows: list[list[str]] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_head = False

    def handle_starttag(self, tag, attrs):
        if tag == "thead":
            self._in_head = True
        elif tag == "tr":
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "thead":
            self._in_head = False
        elif tag in ("th", "td") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._in_head:
                self.header = self.header or self._row
            else:
                self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def compare_table(notebook) -> list[dict[str, str]]:
    """The compare cell's DataFrame, one dict per row (the index is ``version``)."""
    cell = _cell(notebook, "search_runs")
    html = [output.data["text/html"] for output in cell.outputs if "text/html" in output.get("data", {})]
    assert len(html) == 1, _text(cell)
    table = _Table()
    table.feed(html[0])
    names = ["version", *table.header[1:]]
    return [dict(zip(names, row)) for row in table.rows]


def check_compare_table(notebook, state: Path, project: Path) -> list[dict[str, str]]:
    """The table shows exactly the experiment's parent runs (not the trials), with the registry's aliases."""
    from mlflow import MlflowClient

    from mlops.config import load_settings

    settings = load_settings(project=project, state_dir=state)
    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow.db'}", registry_uri=f"sqlite:///{state / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(settings.model.experiment)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = {run.info.run_id for run in runs if "mlflow.parentRunId" not in run.data.tags}
    assert len(runs) > len(parents), "the trials should be nested child runs"

    rows = compare_table(notebook)
    assert len(rows) == 2, rows
    assert {row["run_id"] for row in rows} == parents
    assert settings.model.metric in rows[0], rows[0]
    champion = client.get_model_version_by_alias(settings.model.name, "champion")
    assert [row["version"] for row in rows if "champion" in row["aliases"].split(", ")] == [str(champion.version)]
    assert len({row["aliases"] for row in rows}) == 2, rows  # the two versions carry different aliases
    return rows


@pytest.mark.slow
def test_walkthrough_notebook__runs_top_to_bottom_on_the_bundled_project(state_dir):
    notebook = run_notebook(NOTEBOOK)

    assert str(state_dir) in _text(_cell(notebook, "mlops.load_settings"))
    assert (state_dir / "mlflow.db").is_file()
    assert "Validation passed" in _text(_cell(notebook, "tasks.validate_data"))
    check_compare_table(notebook, state_dir, REPO)
    monitored = _text(_cell(notebook, 'load_flow(settings, "monitoring")'))
    assert "DRIFT DETECTED" in monitored, monitored  # the bundled current batch is shifted
    assert "retrain" in monitored


@pytest.mark.slow
@pytest.mark.parametrize("name", ["prices", "flowers"])
def test_walkthrough_notebook__runs_unchanged_in_a_new_project(name, state_dir, tmp_path):
    """``mlops init`` on a user's table: regression (no current batch) and multi-class (with one)."""
    from datasets import write

    import mlops

    train_path, current_path, spec = write(name, tmp_path / "input")
    project = mlops.init_project(tmp_path / "project", train_path, spec.target)
    assert project.task == spec.task
    if name == "flowers":  # the user points data.current at a later batch
        current = project.root / "data" / current_path.name
        current.write_bytes(current_path.read_bytes())
        config = project.config.read_text().replace("data:\n", f"data:\n  current: data/{current.name}\n", 1)
        project.config.write_text(config)

    notebook = run_notebook(project.root / "notebooks" / "walkthrough.ipynb")

    rows = check_compare_table(notebook, state_dir, project.root)
    assert ("rmse" if spec.task == "regression" else "roc_auc") in rows[0]
    monitored = _text(_cell(notebook, 'load_flow(settings, "monitoring")'))
    if name == "flowers":
        assert "columns drifted" in monitored, monitored
    else:
        assert "no current batch" in monitored, monitored
