"""What shadow mode costs the client: the same load on one deployment with and without
a shadow version getting a copy of every request.

    .venv/bin/python benchmarks/shadow_overhead.py [--seconds 5] [--rounds 8] [--concurrency 8]

Registers two RandomForest versions (100 trees, different seeds) in a temporary state
folder and deploys the first with `mlops deploy`'s code. Single-record ``/predict``
requests at ``--concurrency`` connections (the external load client, its own process):

1. without any shadow process (the baseline a deployment has today);
2. then the second version in shadow mode (``deploy_shadow``), and ``--rounds`` pairs of
   runs with its copies on and off, in an order rotated per round. Copies are switched
   through the proxy's upstream file, as ``deploy_shadow`` and ``stop_shadow`` do, so the
   pairs sit seconds apart and the load of anything else on the machine cancels out; an
   idle shadow process costs nothing measurable (row "idle shadow vs none").

The table keeps each figure's median over the rounds and the median of the per-round
p50 ratios; the copies the shadow got (sent, dropped, failed) come from the proxy's
``GET /-/proxy``. Target: the client's p50 with copies at most 10 % above without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def register_second(settings, estimator) -> str:
    """Register another version in the experiment ``serving.register`` created (no alias moves)."""
    import mlflow
    from mlflow.models import infer_signature
    from serving import _trusted_types, breast_cancer

    dataset = breast_cancer()
    model = estimator.fit(dataset.features, dataset.target)
    mlflow.set_experiment(settings.model.experiment)
    with mlflow.start_run():
        info = mlflow.sklearn.log_model(
            model, name="model", signature=infer_signature(dataset.features, model.predict(dataset.features)),
            registered_model_name=settings.model.name, pip_requirements=["scikit-learn"],
            serialization_format="skops", skops_trusted_types=_trusted_types(model),
        )  # fmt: skip
    return str(info.registered_model_version)


def shadow_copies(url: str, timeout: float = 30.0) -> tuple[dict, int]:
    """The proxy's shadow counts once its queue is empty, and how many copies were queued at first."""
    import httpx

    from mlops.proxy import STATUS_PATH

    deadline, backlog = time.monotonic() + timeout, None
    while True:
        copies = httpx.get(url + STATUS_PATH, timeout=5.0).json()["shadow"] or {}
        backlog = copies.get("queued", 0) if backlog is None else backlog
        if not copies.get("queued") or time.monotonic() > deadline:
            return copies, backlog
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=0.5, help="Seconds of load before measuring.")
    parser.add_argument("--rounds", type=int, default=12, help="Pairs of runs with copies on and off.")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s runs (smoke run).")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup, args.rounds = 1.0, 0.3, 1
    sys.path.insert(0, str(HERE))
    import pandas as pd
    from _results import Row, write_results
    from serving import Request, _show, build_models, register, run_load
    from sklearn.ensemble import RandomForestClassifier

    from mlops.config import load_settings
    from mlops.deployment import _upstream_file, deploy, deploy_shadow, stop_deployment
    from mlops.environment import tool_environment
    from mlops.proxy import write_upstream
    from mlops.serving import free_port

    state_dir = Path(tempfile.mkdtemp(prefix="shadow-bench-")) / "state"
    state_dir.mkdir(parents=True)
    body = state_dir / "record.json"
    record = pd.read_csv(REPO / "data" / "train.csv").drop(columns="target").iloc[0].to_dict()
    body.write_text(json.dumps({"records": [record]}))
    settings = load_settings(state_dir=state_dir, serving={"port": free_port()})
    runs: dict[str, list[dict]] = {"none": [], "off": [], "on": []}
    copies = {"sent": 0, "dropped": 0, "failed": 0}
    backlogs: list[int] = []

    def measure(condition: str, url: str) -> dict:
        result = run_load(Request(condition, url + "/predict", body), args.concurrency, args.seconds, args.warmup)
        runs[condition].append(result)
        print(f"{condition:4} {_show(result)}", flush=True)
        return result

    with tool_environment(settings):
        register(settings, build_models()["RandomForest"])
        challenger = register_second(settings, RandomForestClassifier(n_estimators=100, random_state=1))
        try:
            state = deploy(settings)
            print(f"champion v{state.backend.version} ready in {state.backend.ready_seconds} s; no shadow yet")
            for _ in range(max(1, args.rounds // 4)):
                measure("none", state.url)
            shadow = deploy_shadow(settings, challenger).shadow
            print(f"shadow v{shadow.version} ready in {shadow.ready_seconds} s")
            for round_index in range(args.rounds):
                for condition in ("off", "on") if round_index % 2 == 0 else ("on", "off"):
                    write_upstream(_upstream_file(settings), state.backend.url, shadow=shadow.url if condition == "on" else None)
                    time.sleep(0.3)
                    before, _ = shadow_copies(state.url)
                    measure(condition, state.url)
                    after, backlog = shadow_copies(state.url)
                    if condition == "on":
                        backlogs.append(backlog)
                    for name in copies:
                        copies[name] += after.get(name, 0) - before.get(name, 0)
        finally:
            stop_deployment(settings)
    med = {condition: {field: statistics.median(run[field] for run in rs) for field in rs[0]} for condition, rs in runs.items()}
    paired = statistics.median(on["p50_ms"] / off["p50_ms"] for on, off in zip(runs["on"], runs["off"]))
    label = f"/predict, single record, c={args.concurrency}"
    rows = [
        Row(f"{label}: client p50 with shadow copies vs without", med["on"]["p50_ms"], med["off"]["p50_ms"], "ms", "≤ 1.10×"),
        Row(f"{label}: client p50 with vs without, median of the per-round ratios", paired, None, "×", "≤ 1.10×"),
        Row(f"{label}: client p99 with shadow copies vs without", med["on"]["p99_ms"], med["off"]["p99_ms"], "ms"),
        Row(f"{label}: req/s with shadow copies vs without", med["on"]["rps"], med["off"]["rps"], "req/s"),
        Row(f"{label}: non-2xx with shadow copies", sum(run["non_2xx"] for run in runs["on"]), None, "responses", "0"),
        Row(f"{label}: client p50, idle shadow process vs none", med["off"]["p50_ms"], med["none"]["p50_ms"], "ms"),
        Row(f"{label}: copies the shadow scored vs copies made", copies["sent"], copies["sent"] + copies["dropped"], "copies"),
        Row(f"{label}: copies failed", copies["failed"], None, "copies", "0"),
        Row(f"{label}: copies still queued as a run ended (median)", statistics.median(backlogs), None, "copies"),
    ]
    print(f"p50 with/without shadow copies: {med['on']['p50_ms'] / med['off']['p50_ms']:.3f} (paired: {paired:.3f})")
    notes = (
        f"{args.rounds} rounds of paired runs (copies on, off; order rotated), {args.seconds:g} s measured per run after "
        f"{args.warmup:g} s of warm-up; medians over the rounds. RandomForest (100 trees) champion; another RandomForest "
        "(seed 1) as the shadow, started by deploy_shadow (nice 19 and its scheduler autogroups at nice 19, "
        "mlops.deployment.SHADOW_NICE) and running through every paired run; the next run starts once the proxy's "
        "queue is empty. The baseline without any shadow process ran first, minutes from the rest: its row shows the "
        "machine's drift more than the idle process. Load client benchmarks/_load.py "
        "(aiohttp, own process); client, proxy, champion and shadow share the machine."
    )
    write_results("shadow_overhead", rows, notes, quick=args.quick)


if __name__ == "__main__":
    main()
