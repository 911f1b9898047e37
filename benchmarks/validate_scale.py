"""Measure contract validation at scale: rows/s and peak RSS (Linux), never asserted.

    .venv/bin/python benchmarks/validate_scale.py --rows 1000000 --columns 30 --mode chunked

Writes a seeded CSV (features ``f0..f{n-1}`` uniform in [0, 1], a 0/1 ``target``) and a
contract drafted from its first 10,000 rows into a temporary folder, then validates the
file in one of three modes: ``whole`` (load_table + GX on the whole frame), ``chunked``
(validate_file_in_chunks), or ``frame`` (GX on an in-memory frame, no CSV parsing).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _write_data(folder: Path, rows: int, columns: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.random((rows, columns)).round(6), columns=[f"f{i}" for i in range(columns)])
    frame["target"] = rng.integers(0, 2, rows)
    path = folder / "big.csv"
    frame.to_csv(path, index=False)
    return path, frame


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="20k rows, the results table only (smoke run).")
    parser.add_argument("--table", action="store_true", help="Run every mode in its own process; write the table.")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=30)
    parser.add_argument("--mode", choices=["whole", "chunked", "frame"], default="chunked")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    parser.add_argument("--folder", type=Path, help="Reuse (or create) the data here; default: a temporary folder.")
    args = parser.parse_args()
    if args.quick or args.table or len(sys.argv) == 1:
        _table(20_000 if args.quick else args.rows, args.columns, args.chunk_rows, args.quick)
        return
    if args.folder:
        print(json.dumps(_measure(args, args.folder)))
        return
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(_measure(args, Path(folder))))


def _measure(args: argparse.Namespace, folder: Path) -> dict:
    from mlops.contract import validate_file_in_chunks, validate_file_with_contract, validate_with_contract
    from mlops.data import load_table

    # The data is written by a child process, so its memory never counts in this one's peak.
    if not (folder / "big.csv").is_file():
        command = [sys.executable, __file__, "--generate", str(folder), str(args.rows), str(args.columns)]
        subprocess.run(command, check=True)
    path, contract = folder / "big.csv", folder / "c.yaml"
    frame = load_table(path) if args.mode == "frame" else None
    before = _peak_rss_mb()
    started = time.perf_counter()
    if args.mode == "whole":
        result = validate_file_with_contract(path, contract)
    elif args.mode == "chunked":
        result = validate_file_in_chunks(path, contract, chunk_rows=args.chunk_rows)
    else:
        result = validate_with_contract(frame, contract)
    seconds = time.perf_counter() - started
    return {
        "mode": args.mode,
        "rows": result.rows,
        "columns": args.columns + 1,
        "success": result.success,
        "seconds": round(seconds, 1),
        "rows_per_second": round(result.rows / seconds),
        "frame_mb": round(result.rows * (args.columns + 1) * 8 / 1e6),
        "peak_rss_mb_before": round(before),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def _table(rows: int, columns: int, chunk_rows: int, quick: bool) -> None:
    """Each mode in a fresh process on the same file; ours = chunked, baseline = GX on the whole file."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import Row, write_results

    with tempfile.TemporaryDirectory() as folder:
        common = ["--rows", str(rows), "--columns", str(columns), "--chunk-rows", str(chunk_rows), "--folder", folder]
        runs = {}
        for mode in ("whole", "chunked"):
            output = subprocess.run([sys.executable, __file__, "--mode", mode, *common], check=True, capture_output=True, text=True)
            runs[mode] = json.loads(output.stdout.strip().splitlines()[-1])
    label = f"{rows:,} rows × {columns + 1} cols"
    rows_out = [
        Row(f"{label}: rows/s, chunked vs whole-file GX", runs["chunked"]["rows_per_second"], runs["whole"]["rows_per_second"], "rows/s", "≥ 1M rows/s"),
        Row(f"{label}: peak RSS", runs["chunked"]["peak_rss_mb"], runs["whole"]["peak_rss_mb"], "MB", f"≤ 2× frame ({2 * runs['whole']['frame_mb']} MB)"),
    ]
    write_results("validate_scale", rows_out, "Both through the data contract with GX as the engine.", quick=quick)


def _generate(folder: Path, rows: int, columns: int) -> None:
    from mlops.contract import draft_contract, write_contract

    _, frame = _write_data(folder, rows, columns)
    write_contract(draft_contract(frame.head(10_000), "target", "big", margin=0.5), folder / "c.yaml")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--generate":
        _generate(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
