"""Orchestration overhead: the training flow through Prefect vs its stage functions in a plain script.

    .venv/bin/python benchmarks/orchestration_overhead.py [--rounds 5] [--quick]

Both contenders train on the same data, in the same process and state folder: load,
validate against the contract, split, search, register in MLflow, gate, model card.
The Prefect contender is ``flows.training.training_flow`` as ``mlops train`` runs it
(run heartbeats off, :func:`mlops.environment.one_shot_flow_runs`), against a local
Prefect server (``mlops schedule``'s, started once; its start-up has its own row);
a third contender keeps Prefect's run heartbeats, as scheduled runs do.
The plain contender calls the same library functions, in the same order, with no
orchestrator. One warm-up run each (imports, caches), then rounds that alternate
which contender goes first; medians. Target: ≤ 1.3×. `mlops --help`'s wall time is
``cli_startup.py``'s row.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prefect_runs import finished_task_runs  # noqa: E402
from _results import Row, median, write_results  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def plain_training(settings, run: str) -> str:
    """The training flow's stages as plain calls (see flows/training.py): the no-orchestrator baseline."""
    from mlops import contract, data, tracking, training

    data_path = Path(settings.data.training)
    frame = data.load_table(data_path)
    result, report = contract.check_with_report(
        frame, settings.data.contract, scope="training", source=str(data_path),
        report_path=settings.reports_dir / f"validation-plain-{run}.html",
    )  # fmt: skip
    if not result.success:
        raise RuntimeError(result.summary())
    model = settings.model
    split = training.split_holdout(frame, settings.data.target, model.test_size, model.seed, model.task)
    searched = training.search_candidates(split, model, None)
    fingerprint = data.data_fingerprint(frame)
    tags = {"trigger": "benchmark", "data_fingerprint": fingerprint, "flow_run_id": ""}
    manifest = training.split_manifest(frame, split, model.seed)
    registered = tracking.log_and_register(
        searched.best, split, frame, settings, data_path=data_path, tags=tags, trials=searched.trials,
        manifest=manifest, reports=[report],
    )  # fmt: skip
    decision = tracking.gate_challenger(registered, split, settings)
    facts = {"file": str(data_path), "rows": str(len(frame)), "fingerprint": fingerprint, "trigger": "benchmark"}
    tracking.log_model_card(registered, tracking.model_card(registered, decision, settings, facts))
    return registered.version


def prefect_training(settings, run: str) -> str:
    """The training flow as `mlops train` runs it (run heartbeats off); returns its flow run id."""
    from mlops.environment import one_shot_flow_runs

    with one_shot_flow_runs():
        return prefect_training_with_heartbeats(settings, run)


def prefect_training_with_heartbeats(settings, run: str) -> str:
    """The training flow with Prefect's default run heartbeats, as scheduled runs have them."""
    from flows.training import training_flow

    return training_flow(settings, trigger="benchmark").flow_run_id


CONTENDERS = {"prefect": prefect_training, "prefect, heartbeats": prefect_training_with_heartbeats, "plain": plain_training}


def timed(function, *args) -> tuple[float, str]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def measure(settings, rounds: int, warm_up: bool) -> tuple[dict[str, list[float]], list[tuple[float, str]]]:
    """Warm-up runs (unless quick), then ``rounds`` rounds, rotating which contender goes first.

    Returns the wall times by contender and the Prefect runs' (wall time, flow run id).
    """
    for name, function in CONTENDERS.items() if warm_up else ():
        print(f"warm-up {name}: {timed(function, settings, f'warm-up-{name}')[0]:.2f} s")
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    flow_runs = []
    for index in range(rounds):
        names = list(CONTENDERS)
        for name in names[index % len(names) :] + names[: index % len(names)]:
            wall, result = timed(CONTENDERS[name], settings, f"{name}-{index}".replace(", ", "-").replace(" ", "-"))
            times[name].append(wall)
            if name == "prefect":
                flow_runs.append((wall, result))
        print(f"round {index + 1}: " + "  ".join(f"{name} {times[name][-1]:.2f} s" for name in CONTENDERS))
    return times, flow_runs


def time_outside_tasks(flow_runs: list[tuple[float, str]]) -> list[float]:
    """Per Prefect run: its wall time minus its task runs' durations (engine and API calls)."""
    ended = finished_task_runs([run for _, run in flow_runs], expected=6 * len(flow_runs))
    inside = {run: 0.0 for _, run in flow_runs}
    for task_run in ended:
        inside[str(task_run.flow_run_id)] += (task_run.end_time - task_run.start_time).total_seconds()
    return [wall - inside[run] for wall, run in flow_runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="One round, no warm-up (smoke run).")
    args = parser.parse_args()
    rounds = 1 if args.quick else args.rounds
    os.chdir(REPO)  # the default config's data paths are relative to the repository

    from mlops.config import load_settings
    from mlops.environment import tool_environment
    from mlops.orchestration import start_local_server
    from mlops.serving import free_port

    state_dir = Path(tempfile.mkdtemp(prefix="orchestration-bench-")) / "state"
    with tool_environment(load_settings(state_dir=state_dir)):
        started = time.perf_counter()
        server = start_local_server(load_settings(state_dir=state_dir), free_port())
        startup = time.perf_counter() - started
    try:
        settings = load_settings(state_dir=state_dir, prefect_api_url=server.api_url)
        with tool_environment(settings):
            times, flow_runs = measure(settings, rounds, warm_up=not args.quick)
            outside = time_outside_tasks(flow_runs)
    finally:
        server.stop()
    prefect, plain = median(times["prefect"]), median(times["plain"])
    rows = [
        Row("training: Prefect flow vs plain script", prefect, plain, "s", "≤ 1.3×"),
        Row("training: Prefect flow with run heartbeats (schedules) vs plain", median(times["prefect, heartbeats"]), plain, "s"),
        Row("training: Prefect's added time per run", prefect - plain, None, "s"),
        Row("training: Prefect run's time outside its task runs", median(outside), None, "s"),
        Row("Prefect server start-up (once)", startup, None, "s"),
    ]
    notes = (
        f"Median of {rounds} rotating round(s){'' if args.quick else ' after one warm-up each'}; default model config, bundled "
        f"training data; local Prefect server (`prefect server start`, as `mlops schedule` runs it)."
    )
    write_results("orchestration_overhead", rows, notes, quick=args.quick)


if __name__ == "__main__":
    main()
