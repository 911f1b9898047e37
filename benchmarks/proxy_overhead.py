"""How much the swap proxy costs: the same load straight at the model server and
through the proxy of a deployment (a RandomForest, one record per request).

    .venv/bin/python benchmarks/proxy_overhead.py [--seconds 10] [--concurrency 32]

Registers a model in a temporary state folder, runs `mlops deploy`'s code, measures,
stops everything. Figures depend on the machine: compare the two rows, not the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load(url: str, path: str, seconds: float, concurrency: int, body: Path) -> dict:
    """One run of the external load client (``benchmarks/_load.py``, its own process)."""
    from serving import Request, run_load

    return run_load(Request("", url + path, body), concurrency, seconds, warmup=min(1.0, seconds / 2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="1 s per row at concurrency 4 (smoke run).")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.concurrency = 1.0, 4
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _results import Row, write_results
    from serving import _show, build_models, register

    rows: list = []

    import pandas as pd

    from mlops.config import load_settings
    from mlops.deployment import deploy, stop_deployment
    from mlops.environment import tool_environment
    from mlops.serving import free_port

    record = pd.read_csv(REPO / "data" / "train.csv").drop(columns="target").iloc[0].to_dict()
    state_dir = Path(tempfile.mkdtemp(prefix="proxy-bench-")) / "state"
    state_dir.mkdir(parents=True)
    body = state_dir / "record.json"
    body.write_text(json.dumps({"records": [record]}))
    settings = load_settings(state_dir=state_dir, serving={"port": free_port()})
    with tool_environment(settings):
        register(settings, build_models()["RandomForest"])
        state = deploy(settings)
        print(f"deployment ready in {state.backend.ready_seconds} s")
        try:
            for path in ("/predict_batched", "/predict"):
                for concurrency in (1, args.concurrency):
                    measured = {}
                    for name, url in (("direct", state.backend.url), ("proxy", state.url)):
                        result = measured[name] = load(url, path, args.seconds, concurrency, body)
                        print(f"{path:17} c={concurrency:<3} {name:7} {_show(result)}")
                    label = f"{path} c={concurrency}"
                    rows.append(Row(f"{label}: req/s via proxy vs direct", measured["proxy"]["rps"], measured["direct"]["rps"], "req/s"))
                    rows.append(Row(f"{label}: p99 via proxy vs direct", measured["proxy"]["p99_ms"], measured["direct"]["p99_ms"], "ms"))
                    rows.append(Row(f"{label}: non-2xx via proxy", measured["proxy"]["non_2xx"], None, "responses", "0"))
        finally:
            stop_deployment(settings)
    write_results("proxy_overhead", rows, "RandomForest (100 trees), one record per request, load client benchmarks/_load.py (aiohttp, own process).", quick=args.quick)


if __name__ == "__main__":
    main()
