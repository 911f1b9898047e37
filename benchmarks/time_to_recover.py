"""Time to recover: from drift detected to a better champion answering, under steady traffic.

    .venv/bin/python benchmarks/time_to_recover.py [--rounds 3] [--rate 40] [--quick]

Each round: the champion trained on the bundled data serves behind the swap proxy; an
external client process (``_traffic.py``) sends the demo's production traffic without
pause (patients measured after a scanner update, :func:`mlops.data.make_production_traffic`),
records every answer's model version and posts each answer's true label to
``POST /labels``. Once the window is logged, the monitoring flow (a real Prefect flow
run) detects drift and the quality drop, retrains on the reference plus the older
labeled rows, judges both versions on the newest labeled rows, promotes and redeploys
through the safe swap. Target: ≤ 10 s from t0 to t1, 0 failed requests, and the new
champion better than the old on the recent data.

- t0, drift detected: the end of the monitoring flow's ``measure_drift`` task run;
- t1: the first answer the client got from the new version;
- the stages in between come from the Prefect task runs of the monitoring flow and of
  its retrain child flow, and from the deployment's readiness time. They add up to t1 - t0.

Rounds after the first move ``champion`` back to the bundled data's model and swap it in
again, so the Prefect server, the proxy and the tool imports are warm, as in a
long-running ``mlops schedule``. ``--quick``: one round, a short window (smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _prefect_runs import finished_task_runs, flow_run_start  # noqa: E402
from _results import Row, median, write_results  # noqa: E402
from _traffic import read_answers, start_client  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 10.0
# Consecutive stage boundaries: (stage, Prefect task run whose end closes it); see stage_times.
TRAINING_STAGES = (("validate", "validate_data"), ("train", "pick_best"), ("register", "register_model"),
                   ("recent set, gate", "gate"))
# Task runs of one monitoring flow run that retrains and redeploys, and of its training flow run.
MONITORING_TASKS, TRAINING_TASKS = 10, 8  # the training flow: a search_candidate per candidate (one here) and pick_best
TOTAL = "drift detected → new champion answering"


def champion(settings) -> str:
    """The bundled data's model: good on the training data, hurt by the scanner shift."""
    from flows.training import training_flow

    return training_flow(settings).registered.version


def production_records(settings) -> tuple[list[dict], list]:
    """The shifted production rows (the contract accepts them all) and their true labels."""
    from mlops.data import make_production_traffic

    _, after = make_production_traffic(settings.model.seed)
    target = settings.data.target
    return json.loads(after.drop(columns=[target]).to_json(orient="records")), after[target].tolist()


def logged_rows(settings) -> int:
    return sum(len(path.read_bytes().splitlines()) for path in settings.predictions_dir.glob("predictions-*.jsonl"))


def wait_for_window(settings, rows: int, process, timeout: float = 120.0) -> None:
    """Wait until the client's requests have put ``rows`` more predictions in the log."""
    start = logged_rows(settings)
    deadline = time.monotonic() + timeout
    while logged_rows(settings) < start + rows:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the client did not get {rows} predictions logged within {timeout:g} s")
        time.sleep(0.5)


def stage_times(monitoring_run: str, retrain_run: str, ready_seconds: float, t1: float) -> tuple[float, dict[str, float]]:
    """t0 and the stages from t0 to t1, each from one boundary to the next, so they add up."""
    ended = finished_task_runs([monitoring_run, retrain_run], expected=MONITORING_TASKS + TRAINING_TASKS)
    runs = {run.name.rsplit("-", 1)[0]: run for run in ended}
    retrain_start = flow_run_start(retrain_run)
    t0 = runs["measure_drift"].end_time.timestamp()
    boundaries = [("record, alert, decide, start retrain", retrain_start)]
    boundaries += [(stage, runs[task].end_time.timestamp()) for stage, task in TRAINING_STAGES]
    redeploy_start = runs["redeploy"].start_time.timestamp()
    boundaries.append(("model card, end of retrain", redeploy_start))
    boundaries.append(("package (BentoML import, server ready)", redeploy_start + ready_seconds))
    boundaries.append(("smoke test, swap", t1))
    stages, previous = {}, t0
    for stage, moment in boundaries:
        stages[stage], previous = moment - previous, moment
    return t0, stages


def recover_once(settings, base: str, records: list[dict], labels: list, folder: Path, args) -> dict[str, float]:
    """One round: the base champion serving, shifted traffic and its labels, monitoring until the new version answers."""
    from mlflow import MlflowClient

    from flows.monitoring import monitoring_flow
    from mlops.deployment import deploy, deployment_status

    MlflowClient().set_registered_model_alias(settings.model.name, "champion", base)
    state = deploy(settings)
    process, stop, out = start_client(state.url, records, folder, args.rate, args.concurrency, labels)
    try:
        wait_for_window(settings, args.window, process)
        time.sleep(1.0)  # the labels of the last requests arrive a moment after them
        flow_state = monitoring_flow(settings, return_state=True)
        outcome = flow_state.result()
        if outcome.retrain is None or not outcome.retrain.decision.promoted:
            raise RuntimeError(f"no promoted retrain: {outcome.decision and outcome.decision.explain()}"
                               + (f"; gate: {outcome.retrain.decision.reason}" if outcome.retrain else ""))
        new = outcome.retrain.registered.version
        time.sleep(args.tail)  # traffic keeps flowing after the swap: the old version drains
    finally:
        stop.touch()
        process.wait(120)
    answers = read_answers(out)
    served_new = [answer.done for answer in answers if answer.ok and str(answer.version) == str(new)]
    if not served_new:
        raise RuntimeError(f"the client never got an answer from version {new}")
    ready = deployment_status(settings).state.backend.ready_seconds
    monitoring_run = str(flow_state.state_details.flow_run_id)
    t0, stages = stage_times(monitoring_run, outcome.retrain.flow_run_id, ready, min(served_new))
    # A 422 is the contract refusing a real measurement outside its ranges: an answer, not a failure.
    failed = [answer for answer in answers if not answer.ok and answer.status != 422]
    refused = [answer for answer in answers if answer.status == 422]
    for answer in failed[:5]:
        print(f"failed request: status {answer.status} {answer.error}")
    decision = outcome.retrain.decision
    live = {version: [a.correct for a in answers if a.correct is not None and str(a.version) == version]
            for version in (str(base), str(new))}
    return {TOTAL: min(served_new) - t0, **stages,
            "recent accuracy before": decision.recent_champion_score, "recent accuracy after": decision.recent_challenger_score,
            "recent rows": decision.recent_rows,
            "live accuracy before": sum(live[str(base)]) / max(1, len(live[str(base)])),
            "live accuracy after": sum(live[str(new)]) / max(1, len(live[str(new)])),
            "requests sent": len(answers), "failed requests": len(failed), "refused requests": len(refused)}  # fmt: skip


_QUALITY = ("recent accuracy before", "recent accuracy after", "recent rows", "live accuracy before", "live accuracy after")


def report(runs: list[dict[str, float]]) -> list[Row]:
    rows = [Row(TOTAL, median([run[TOTAL] for run in runs]), None, "s", f"≤ {TARGET_SECONDS:g} s")]
    for stage in [key for key in runs[0] if key not in (TOTAL, "requests sent", "failed requests", "refused requests", *_QUALITY)]:
        rows.append(Row(f"stage: {stage}", median([run[stage] for run in runs]), None, "s"))
    stages = rows[1:]
    rows.append(Row("accuracy on the recent rows: new champion vs old", median([run["recent accuracy after"] for run in runs]),
                    median([run["recent accuracy before"] for run in runs]), "", "ratio > 1"))
    rows.append(Row("recent evaluation rows (newest labeled, never trained on)", median([run["recent rows"] for run in runs]),
                    None, "rows"))
    rows.append(Row("accuracy of live answers on the shifted traffic: new vs old", median([run["live accuracy after"] for run in runs]),
                    median([run["live accuracy before"] for run in runs]), "", "ratio > 1"))
    rows.append(Row("failed requests (all rounds)", sum(run["failed requests"] for run in runs), None, "requests", "0"))
    rows.append(Row("refused by the contract, 422 (all rounds)", sum(run["refused requests"] for run in runs), None, "requests"))
    rows.append(Row("requests sent (all rounds)", sum(run["requests sent"] for run in runs), None, "requests"))
    if rows[0].ours > TARGET_SECONDS:
        print(f"Target missed ({rows[0].ours:.1f} s > {TARGET_SECONDS:g} s); where the time goes:")
        for row in sorted(stages, key=lambda row: -row.ours):
            print(f"  {row.ours:6.1f} s  {100 * row.ours / rows[0].ours:4.0f}%  {row.figure}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=40.0, help="Client requests per second.")
    parser.add_argument("--concurrency", type=int, default=4, help="Client connections.")
    parser.add_argument("--window", type=int, default=600, help="Drifted predictions logged before monitoring runs.")
    parser.add_argument("--tail", type=float, default=3.0, help="Seconds of traffic after the swap.")
    parser.add_argument("--quick", action="store_true", help="One round, a 100-row window (smoke run).")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.window, args.tail = 1, 300, 1.0
    os.chdir(REPO)  # the default config's data paths are relative to the repository

    from mlops.config import load_settings
    from mlops.deployment import stop_deployment
    from mlops.environment import tool_environment
    from mlops.serving import free_port

    folder = Path(tempfile.mkdtemp(prefix="recover-bench-"))
    # The retrain of this benchmark is on the reference (no labels come back): its time, not its data.
    # As the demo: the gate judges on accuracy (the shift moves the threshold, not the ranking).
    monitoring = {"cooldown_minutes": 0, "max_retrains_per_day": 1000, "window_rows": args.window}
    settings = load_settings(state_dir=folder / "state", serving={"port": free_port()}, monitoring=monitoring,
                             model={"primary_metric": "accuracy"})
    with tool_environment(settings):
        base = champion(settings)
        records, labels = production_records(settings)
        try:
            runs = [recover_once(settings, base, records, labels, folder / f"round-{i}", args) for i in range(args.rounds)]
        finally:
            stop_deployment(settings)
    totals = ", ".join(f"{run['drift detected → new champion answering']:.1f}" for run in runs)
    notes = (
        f"Median of {args.rounds} round(s) (totals: {totals} s); client: {args.concurrency} connections at "
        f"{args.rate:g} requests/s, one shifted record per request, its label posted to /labels; window of "
        f"{args.window} logged predictions, the newest 30 % of the labeled ones the recent evaluation set. "
        "Each round's stages add up to its total (the medians need not)."
    )
    write_results("time_to_recover", report(runs), notes, quick=args.quick)


if __name__ == "__main__":
    main()
