"""Dask search: the training flow's candidate searches on a 2-worker local Dask cluster vs in-process threads.

    .venv/bin/python benchmarks/dask_search.py [--rounds 3] [--quick]

Both contenders run ``mlops.load_flow(settings, "training")`` as ``mlops train`` does (ephemeral
Prefect server, run heartbeats off) on the same table: a few thousand rows, 20 numeric
features, 3 candidates × 8 grid points = 24 trials, 3-fold cross-validation. ``threads`` is
Prefect's ThreadPoolTaskRunner in the flow's process (the default); ``dask`` is
``orchestration.task_runner: dask``, a LocalCluster of 2 worker processes × 1 thread started
and stopped by each flow run (its start-up is inside the time). One warm-up run each
(imports, caches), then rounds that alternate which goes first; medians. The ratio is dask
over threads: below 1× the cluster pays for itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import Row, median, write_results  # noqa: E402

CANDIDATES = [
    {"name": "logreg", "estimator": "logistic_regression", "space": {"C": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}},
    {"name": "forest", "estimator": "random_forest", "params": {"n_estimators": 60}, "space": {"max_depth": [2, 3, 4, 5, 6, 8, 10, None]}},
    {"name": "knn", "estimator": "sklearn.neighbors:KNeighborsClassifier", "space": {"n_neighbors": [3, 5, 9, 15, 21, 31, 45, 61]}},
]


def write_project(folder: Path, rows: int) -> dict:
    """A seeded classification table and its drafted contract; the data section pointing at them."""
    import pandas as pd
    from sklearn.datasets import make_classification

    from mlops.contract import draft_contract, write_contract

    features, labels = make_classification(n_samples=rows, n_features=20, n_informative=8, random_state=0)
    frame = pd.DataFrame(features, columns=[f"x{i}" for i in range(features.shape[1])]).assign(label=labels)
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "table.csv", index=False)
    contract = write_contract(draft_contract(frame, "label", "table"), folder / "table.yaml")
    return {"training": str(folder / "table.csv"), "target": "label", "contract": str(contract), "suite": str(folder / "suite.json")}


def train(settings) -> float:
    """One training flow run on the settings' task runner; its wall time, cluster start-up included."""
    import mlops

    started = time.perf_counter()
    mlops.load_flow(settings, "training")(settings, trigger="benchmark")
    return time.perf_counter() - started


def measure(contenders: dict, rounds: int, warm_up: bool) -> dict[str, list[float]]:
    for name, settings in contenders.items() if warm_up else ():
        print(f"warm-up {name}: {train(settings):.2f} s")
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for index in range(rounds):
        names = list(contenders)
        for name in names[index % 2 :] + names[: index % 2]:
            times[name].append(train(contenders[name]))
        print(f"round {index + 1}: " + "  ".join(f"{name} {times[name][-1]:.2f} s" for name in contenders))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="One round, no warm-up, a smaller table and grid (smoke run).")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    rows, points = (1000, 2) if args.quick else (3000, 8)

    from mlops.environment import tool_environment
    from mlops.orchestration import command_flow_runs
    from mlops.project import load_settings

    folder = Path(tempfile.mkdtemp(prefix="dask-search-bench-"))
    data = write_project(folder / "data", rows)
    candidates = [{**candidate, "space": {k: v[:points] for k, v in candidate["space"].items()}} for candidate in CANDIDATES]
    model = {"candidates": candidates, "name": "dask-bench", "experiment": "dask-bench", "search": {"cv_folds": 3}}
    os.chdir(Path(__file__).resolve().parents[1])  # the project's flows/training.py
    contenders = {
        runner: load_settings(state_dir=folder / "state", data=data, model=model, orchestration={"task_runner": runner, "dask_workers": 2})
        for runner in ("threads", "dask")
    }
    with tool_environment(contenders["threads"]), command_flow_runs(contenders["threads"]):
        times = measure(contenders, rounds, warm_up=not args.quick)
    trials = len(candidates) * points
    rows_out = [
        Row(f"training flow, {trials} trials: dask (2 workers) vs threads", median(times["dask"]), median(times["threads"]), "s"),
    ]
    notes = (
        f"Median of {rounds} alternating round(s){'' if args.quick else ' after one warm-up each'}; {rows} rows × 20 features, "
        f"3 candidates × {points} grid points, 3-fold CV; ephemeral Prefect server; the dask time includes starting "
        f"and stopping the LocalCluster (2 processes × 1 thread, 127.0.0.1) in each flow run."
    )
    write_results("dask_search", rows_out, notes, quick=args.quick)


if __name__ == "__main__":
    main()
