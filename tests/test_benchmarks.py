"""Every benchmark runs in --quick mode, so none of them rots. Timing is never asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
# Quick runs that repeat another test's work: dask_search.py (~45 s: two flow runs, one starting a Dask
# cluster) is tests/test_dask.py's path; demo_end_to_end.py (~100 s: one `mlops demo`) is test_cli's demo,
# which also reads the benchmark's rows from its demo (stage_times).
SLOW_QUICK = {"dask_search.py", "demo_end_to_end.py"}
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_") and p.name not in SLOW_QUICK)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_benchmark__quick_run_writes_its_table(script, tmp_path):
    env = {**os.environ, "MLOPS_BENCH_RESULTS": str(tmp_path), "MLOPS_STATE_DIR": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, str(script), "--quick"], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((tmp_path / f"{script.stem}-quick.json").read_text())
    assert payload["rows"] and all(row["ours"] is not None for row in payload["rows"])
    assert (tmp_path / f"{script.stem}-quick.md").read_text().startswith(f"# {script.stem}")
