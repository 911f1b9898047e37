"""`mlops --help` wall time vs importing the seven tools it drives.

    .venv/bin/python benchmarks/cli_startup.py [--quick]

Target: `mlops --help` ≤ 0.3 s. Each figure is the median of several runs, the
two commands alternating.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, median, write_results  # noqa: E402

MLOPS = Path(sys.executable).with_name("mlops")
TOOLS = "import mlflow, prefect, great_expectations, evidently, bentoml, sklearn, pandas"


def wall_time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 1 if args.quick else 5
    help_times, import_times = [], []
    for _ in range(rounds):
        help_times.append(wall_time([str(MLOPS), "--help"]))
        import_times.append(wall_time([sys.executable, "-c", TOOLS]))
    rows = [Row("`mlops --help` wall time", median(help_times), median(import_times), "s", "≤ 0.3 s")]
    write_results("cli_startup", rows, "Baseline: importing the seven tools in one process.", quick=args.quick)


if __name__ == "__main__":
    main()
