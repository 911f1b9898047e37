"""Shared by the benchmark scripts: machine facts, medians, and the results files.

Each script writes ``benchmarks/results/<name>.json`` and ``<name>.md``: a table of
figure, ours, baseline, ratio, plus the machine, the tool versions and the date.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# Tests point this elsewhere so smoke runs never touch the committed results.
RESULTS = Path(os.environ.get("MLOPS_BENCH_RESULTS", Path(__file__).resolve().parent / "results"))
PACKAGES = ("mlflow", "prefect", "great-expectations", "evidently", "bentoml", "scikit-learn", "pandas")


@dataclass(frozen=True)
class Row:
    """One figure: ours against the baseline, and the target it should meet."""

    figure: str
    ours: float
    baseline: float | None
    unit: str
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return None if not self.baseline else self.ours / self.baseline


def machine() -> dict[str, str]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "system": platform.platform(terse=True),
    }


def versions() -> dict[str, str]:
    found = {}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def median(values: list[float]) -> float:
    return statistics.median(values)


def write_results(name: str, rows: list[Row], notes: str = "", quick: bool = False) -> Path:
    """Write the JSON and Markdown results (``-quick`` suffix for smoke runs) and print the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-quick" if quick else name
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    payload = {
        "benchmark": name,
        "date": stamp,
        "machine": machine(),
        "versions": versions(),
        "rows": [asdict(row) | {"ratio": row.ratio} for row in rows],
        "notes": notes,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=2) + "\n")
    table = _markdown(name, rows, stamp, notes)
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)
    return RESULTS / f"{stem}.md"


def _markdown(name: str, rows: list[Row], stamp: str, notes: str) -> str:
    lines = [f"# {name}", "", "| figure | ours | baseline | ratio | target |", "|---|---:|---:|---:|---|"]
    for row in rows:
        baseline = "–" if row.baseline is None else f"{row.baseline:.3g} {row.unit}"
        ratio = "–" if row.ratio is None else f"{row.ratio:.3g}×"
        lines.append(f"| {row.figure} | {row.ours:.3g} {row.unit} | {baseline} | {ratio} | {row.target} |")
    facts = machine()
    lines += ["", f"Machine: {facts['cpu']}, {facts['cores']} cores, Python {facts['python']}, {facts['system']}."]
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".")
    lines.append(f"Date: {stamp}.")
    if notes:
        lines += ["", notes]
    return "\n".join(lines) + "\n"
