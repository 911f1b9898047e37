"""`mlops demo` wall time on a clean state folder (after install), by stage.

    .venv/bin/python benchmarks/demo_end_to_end.py [--quick]

Target: ≤ 90 s. The stages come from the demo's own timings
(``reports/demo-stages.json``); "start-up" is the wall time not inside any stage
(process start, imports, the ephemeral Prefect server's first start).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, median, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MLOPS = Path(sys.executable).with_name("mlops")


def run_demo() -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mlops-bench-demo-") as state:
        started = time.perf_counter()
        subprocess.run([str(MLOPS), "--state-dir", state, "demo"], cwd=REPO, check=True, capture_output=True)
        return stage_times(Path(state), time.perf_counter() - started)


def stage_times(state: Path, wall: float) -> dict[str, float]:
    """The demo's rows: its wall time and the stages it timed itself (tests/test_cli.py reads them after its demo)."""
    stages = json.loads((state / "reports" / "demo-stages.json").read_text())
    return {"total": wall, **stages, "start-up and shutdown": wall - sum(stages.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    runs = [run_demo() for _ in range(1 if args.quick else 3)]
    rows = [
        Row(f"demo: {name}", median([run[name] for run in runs]), None, "s", "≤ 90 s" if name == "total" else "")
        for name in runs[0]
    ]
    write_results("demo_end_to_end", rows, "Clean state folder each run; median of the runs.", quick=args.quick)


if __name__ == "__main__":
    main()
