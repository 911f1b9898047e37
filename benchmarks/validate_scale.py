"""Validation at scale: the contract gate (ours) vs Great Expectations on the whole frame.

    .venv/bin/python benchmarks/validate_scale.py           # 1M rows × 31 columns, 3 rounds
    .venv/bin/python benchmarks/validate_scale.py --quick   # 20k rows, 1 round (smoke run)
    .venv/bin/python benchmarks/validate_scale.py --rows 200000 --rounds 1

Writes a seeded CSV (features ``f0..f{n-1}`` uniform in [0, 1], a 0/1 ``target``, with
a few out-of-range values and nulls so the gate has findings to report) and a contract
drafted from its clean first 10,000 rows, then measures, each contender in a fresh,
warmed process (imports and first-call caches paid before the clock starts):

- ``gx``: ``load_table`` then GX on the whole frame (``contract.validate_frame``), the baseline;
- ``ours``: ``load_table`` then ``contract.check_with_report``, the gate the flows run;
- ``chunked``: ``contract.validate_file_in_chunks``, the CLI's streaming path for large files.

Peak memory is the process's peak RSS (VmHWM, reset before each step): imports, the frame
and the check's own allocations. Findings of ours and GX are compared expectation by expectation.
Targets: ≥ 1M rows/s, peak memory ≤ 2× the frame's size.
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

CONTENDERS = ("gx", "ours", "chunked")


def generate(folder: Path, rows: int, columns: int) -> None:
    """The data and its contract (drafted before the defects are injected, so they are found)."""
    import numpy as np
    import pandas as pd

    from mlops.contract import draft_contract, write_contract

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((rows, columns)).round(6), columns=[f"f{i}" for i in range(columns)])
    frame["target"] = rng.integers(0, 2, rows)
    write_contract(draft_contract(frame.head(10_000), "target", "big", margin=0.5), folder / "c.yaml")
    frame.loc[frame.index % 1000 == 999, "f0"] = 5.0  # out of range: 0.1% of the rows
    frame.loc[frame.index % 500 == 7, "f1"] = np.nan  # nulls in a non-nullable column
    frame.to_csv(folder / "big.csv", index=False)
    frame.head(2_000).to_csv(folder / "small.csv", index=False)


def worker(contender: str, folder: Path, chunk_rows: int) -> dict:
    """Measure one contender in this process; the caller prints the JSON."""
    path, contract, small = folder / "big.csv", folder / "c.yaml", folder / "small.csv"
    _run(contender, small, contract, folder, chunk_rows)  # warm: imports, first-call caches
    if contender == "chunked":
        _reset_peak()
        started = time.perf_counter()
        result = _run(contender, path, contract, folder, chunk_rows)
        return {"check_s": time.perf_counter() - started, "check_peak_mb": _rss_mb("VmHWM"), **_facts(result)}
    from mlops.data import load_table

    _reset_peak()
    started = time.perf_counter()
    frame = load_table(path)
    load_s, load_peak = time.perf_counter() - started, _rss_mb("VmHWM")
    before = _rss_mb("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    result = _check(contender, frame, contract, folder)
    check_s = time.perf_counter() - started
    frame_mb = frame.memory_usage(deep=True).sum() / 1e6
    return {"load_s": load_s, "load_peak_mb": load_peak, "check_s": check_s, "check_peak_mb": _rss_mb("VmHWM"),
            "rss_before_mb": before, "frame_mb": frame_mb, **_facts(result)}


def _run(contender: str, path: Path, contract: Path, folder: Path, chunk_rows: int):
    from mlops.contract import validate_file_in_chunks
    from mlops.data import load_table

    if contender == "chunked":
        return validate_file_in_chunks(path, contract, chunk_rows=chunk_rows)
    return _check(contender, load_table(path), contract, folder)


def _check(contender: str, frame, contract: Path, folder: Path):
    from mlops.contract import check_with_report, load_contract, to_suite, validate_frame

    if contender == "gx":
        return validate_frame(frame, to_suite(load_contract(contract)))
    report = folder / "validation.html"
    return check_with_report(frame, contract, scope="training", source="big.csv", report_path=report)[0]


def _facts(result) -> dict:
    findings = sorted((f.expectation, f.column, f.severity, f.unexpected_count) for f in result.failures)
    return {"rows": result.rows, "success": result.success, "findings": findings}


def _reset_peak() -> None:
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak-RSS counter (VmHWM)


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(contender: str, folder: Path, chunk_rows: int) -> dict:
    command = [sys.executable, __file__, "--worker", contender, "--folder", str(folder)]
    command += ["--chunk-rows", str(chunk_rows)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k rows, 1 round (smoke run).")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=30, help="Features (a target column is added).")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--worker", choices=CONTENDERS)
    parser.add_argument("--folder", type=Path, help="Reuse (or create) the data here; default: a temporary folder.")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.folder, args.chunk_rows)))
        return
    rows, rounds = (20_000, 1) if args.quick else (args.rows, args.rounds)
    if args.folder:
        _table(args.folder, rows, args.columns, rounds, args.chunk_rows, args.quick)
        return
    with tempfile.TemporaryDirectory() as folder:
        _table(Path(folder), rows, args.columns, rounds, args.chunk_rows, args.quick)


def _table(folder: Path, rows: int, columns: int, rounds: int, chunk_rows: int, quick: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "big.csv").is_file():
        generate(folder, rows, columns)
    runs: dict[str, list[dict]] = {contender: [] for contender in CONTENDERS}
    for _ in range(rounds):  # contenders alternate within each round, so machine noise hits all of them
        for contender in CONTENDERS:
            runs[contender].append(measure(contender, folder, chunk_rows))
            print(f"{contender:8} {runs[contender][-1]['check_s']:.2f} s", file=sys.stderr)
    notes = (
        "Ours: the contract's GX suite evaluated with vectorised pandas/numpy (mlops/contract/checks.py), "
        "GX for anything it does not cover; findings compared with GX's on the same data. Peak RSS is the "
        "whole process (Python, pandas, the frame, and what pandas' CSV parser left in the heap: see 'RSS "
        f"before the check'). Chunked: {chunk_rows:,} rows per chunk, read by pyarrow (by pandas when pyarrow "
        "could read the file otherwise); CSV parsing is most of its time, and of load + gate's."
    )
    write_results("validate_scale", _rows(rows, columns, runs), notes, quick=quick)


def _rows(rows: int, columns: int, runs: dict[str, list[dict]]) -> list[Row]:
    label = f"{rows:,} rows × {columns + 1} cols"
    gx, ours, chunked = runs["gx"], runs["ours"], runs["chunked"]

    def per_s(run: dict, *keys: str) -> float:
        return run["rows"] / sum(run[key] for key in keys)

    frame_mb = median([run["frame_mb"] for run in ours])
    differing = sum(len(set(map(tuple, o["findings"])) ^ set(map(tuple, g["findings"]))) for o, g in zip(ours, gx))
    return [
        Row(f"{label}: rows/s, gate on a frame vs GX on the whole frame", median([per_s(r, "check_s") for r in ours]),
            median([per_s(r, "check_s") for r in gx]), "rows/s", "≥ 1M rows/s"),
        Row(f"{label}: peak RSS during the check (frame {frame_mb:.0f} MB)", median([r["check_peak_mb"] for r in ours]),
            median([r["check_peak_mb"] for r in gx]), "MB", f"≤ 2× frame ({2 * frame_mb:.0f} MB)"),
        Row(f"{label}: RSS before the check (imports, frame, parser leftovers)",
            median([r["rss_before_mb"] for r in ours]), median([r["rss_before_mb"] for r in gx]), "MB"),
        Row(f"{label}: memory the check adds to the loaded frame (peak − RSS before)",
            median([r["check_peak_mb"] - r["rss_before_mb"] for r in ours]),
            median([r["check_peak_mb"] - r["rss_before_mb"] for r in gx]), "MB", f"≤ 1× frame ({frame_mb:.0f} MB)"),
        Row(f"{label}: rows/s from the CSV file, load + gate vs load + GX",
            median([per_s(r, "load_s", "check_s") for r in ours]), median([per_s(r, "load_s", "check_s") for r in gx]),
            "rows/s", "≥ 1M rows/s"),
        Row(f"{label}: rows/s from the CSV file, chunked gate vs load + GX",
            median([per_s(r, "check_s") for r in chunked]),
            median([per_s(r, "load_s", "check_s") for r in gx]), "rows/s", "≥ 1M rows/s"),
        Row(f"{label}: peak RSS from the CSV file, chunked gate vs load + GX",
            median([r["check_peak_mb"] for r in chunked]),
            median([max(r["load_peak_mb"], r["check_peak_mb"]) for r in gx]), "MB",
            f"≤ 2× frame ({2 * frame_mb:.0f} MB)"),
        Row(f"{label}: CSV parsing alone (pandas), rows/s", median([rows / r["load_s"] for r in ours]), None, "rows/s"),
        Row(f"{label}: findings differing from GX's", differing, None, "findings", "0"),
    ]


if __name__ == "__main__":
    main()
