"""The bundled notebook runs top to bottom, so it cannot rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_walkthrough_notebook__code_cells_run_in_order(tmp_path):
    notebook = json.loads((REPO / "notebooks" / "walkthrough.ipynb").read_text())
    code = "\n\n".join("".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code")
    script = tmp_path / "walkthrough.py"
    script.write_text(code + "\n\nassert result.drift.drift_detected and outcome.decision.promoted\nprint('ok')\n")
    env = {**os.environ, "MLOPS_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, str(script)], cwd=REPO / "notebooks", env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
