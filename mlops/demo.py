"""The whole loop, as ``mlops demo`` runs it: on the bundled data, production drifts and the model learns.

On a project's own data the traffic is its own rows (:func:`mlops.data.production_traffic`):
the same stages, with whatever monitoring then finds.

1. **train**: the training flow validates ``data/train.csv``, trains and registers the
   champion (on a state folder that has one already, the new version is made champion:
   the story starts from the bundled data's model);
2. **deploy** it behind the swap proxy on ``serving.port`` (:func:`mlops.deployment.deploy`);
3. **traffic**: a client sends production records without pause, one per request
   (:func:`mlops.data.make_production_traffic`): 100 like the training data, then
   patients measured after a scanner update that under-reports every ``worst_*`` feature
   by 25 %. The contract accepts them; the champion's accuracy on them falls. Their
   ground truth comes back through ``POST /labels``, a batch at a time;
4. **monitor**: the monitoring flow finds the drift and the quality drop on the labeled
   window, retrains on the training data plus the older labeled rows, judges challenger
   and champion on the newest labeled rows (never trained on), promotes the better one
   and swaps it in while the client keeps sending;
5. the summary: quality before and after on the recent data, the versions that answered
   over time, the requests answered during the swap and how many failed. The deployment
   is stopped.

The gate judges on accuracy unless ``model.primary_metric`` says otherwise: a shift that
moves the decision threshold leaves a ranking metric (roc_auc) almost untouched.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
from rich.console import Console

from mlops import contract, data, deployment, processes, tracking, training
from mlops.config import SAMPLE_DATASET, Settings
from mlops.errors import ServingError
from mlops.outcomes import MonitoringOutcome, TrainingOutcome
from mlops.prediction_log import read_prediction_log
from mlops.project import load_flow

__all__ = ["Answer", "DemoSummary", "ProductionClient", "run_demo"]

SHIFTED_BEFORE_MONITORING = 400  # shifted requests answered (and labeled) before monitoring looks
ANSWERS_AFTER_SWAP = 150  # answers from the new champion before the client stops
CLIENT_RATE = 120.0  # requests per second: steady, leaving CPU to the retrain
LABEL_BATCH = 25  # answered requests per POST /labels
DEMO_QUALITY_FLOOR = 0.9  # monitoring.quality_floor unless the config sets one


@dataclass(frozen=True)
class Answer:
    """One request of the client: when, the answer's status and version, and whether it was right."""

    sent: float
    done: float
    status: int
    version: str | None
    shifted: bool
    correct: bool | None


class ProductionClient(threading.Thread):
    """Sends ``before`` then ``after`` (cycled) to ``/predict`` without pause; labels go to ``/labels``.

    One record per request at about ``rate`` requests/s. Every ``label_batch`` answered
    requests, their true labels are posted to ``POST /labels`` (as a labeling team would,
    a little after the predictions). :meth:`stop` ends it.
    """

    def __init__(self, url: str, before: list[dict], after: list[dict], truth: tuple[list, list],
                 headers: dict[str, str], rate: float = CLIENT_RATE, label_batch: int = LABEL_BATCH,
                 score_answers: bool = True) -> None:
        super().__init__(name="demo-client", daemon=True)
        self.score_answers = score_answers  # a regressor's answer is never exactly right: no live accuracy
        self.url, self.headers, self.interval, self.label_batch = url, headers, 1.0 / rate, label_batch
        self.records = [(record, label, False) for record, label in zip(before, truth[0])]
        self.shifted = [(record, label, True) for record, label in zip(after, truth[1])]
        self.answers: list[Answer] = []
        self.labels_accepted = self.labels_refused = 0
        self.label_problems: list[str] = []
        self._pending: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=30)

    @property
    def shifted_answered(self) -> int:
        return sum(1 for answer in self.answers if answer.shifted and answer.status == 200)

    def answers_from(self, version: str) -> int:
        return sum(1 for answer in self.answers if answer.version == version)

    def run(self) -> None:
        next_at, index = time.monotonic(), 0
        with httpx.Client(base_url=self.url, timeout=30.0, headers=self.headers) as client:
            while not self._halt.is_set():
                record, label, shifted = self._record(index)
                index += 1
                self._send(client, record, label, shifted)
                if len(self._pending) >= self.label_batch:
                    self._post_labels(client)
                next_at += self.interval
                self._halt.wait(max(0.0, next_at - time.monotonic()))
            self._post_labels(client)

    def _record(self, index: int) -> tuple[dict, Any, bool]:
        if index < len(self.records):
            return self.records[index]
        return self.shifted[(index - len(self.records)) % len(self.shifted)]

    def _send(self, client: httpx.Client, record: dict, label: Any, shifted: bool) -> None:
        sent = time.time()
        try:
            response = client.post("/predict", json={"records": [record]})
            body = response.json() if response.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            self.answers.append(Answer(sent, time.time(), 0, None, shifted, None))
            return
        prediction = (body.get("predictions") or [None])[0]
        correct = prediction == label if response.status_code == 200 and self.score_answers else None
        self.answers.append(Answer(sent, time.time(), response.status_code, body.get("model_version"), shifted, correct))
        if response.status_code == 200:
            self._pending.append({"request_id": body["request_id"], "record": 0, "label": label})

    def _post_labels(self, client: httpx.Client) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        try:
            response = client.post("/labels", json={"labels": batch})
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            self.labels_refused += len(batch)
            self.label_problems.append(f"POST /labels failed: {type(exc).__name__}")
            return
        self.labels_accepted += int(body.get("accepted", 0))
        self.labels_refused += int(body.get("refused", len(batch) if response.status_code != 200 else 0))
        self.label_problems += [problem for problem in body.get("problems", []) if problem not in self.label_problems]


@dataclass(frozen=True)
class Swap:
    """The deployment's swap to the retrained champion, as the client saw it."""

    from_version: str
    to_version: str
    started: float
    finished: float
    answered: int
    failed: int


@dataclass
class DemoSummary:
    """Everything the demo produced, for the closing summary."""

    training: TrainingOutcome | None = None
    served_version: str | None = None
    endpoint_url: str | None = None
    answers: list[Answer] = field(default_factory=list)
    labels_accepted: int = 0
    labels_refused: int = 0
    monitoring: MonitoringOutcome | None = None
    swap: Swap | None = None
    tracking_uri: str = ""
    metric: str = ""
    traffic_after: str = "after the scanner update"  # what the second part of the traffic is
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def failed_requests(self) -> int:
        """Requests without an answer: no response, or an error that is not the contract refusing a record."""
        return sum(1 for answer in self.answers if answer.status not in (200, 422))

    @property
    def refused_records(self) -> int:
        """Records the data contract refused (422): real measurements outside the contract's ranges."""
        return sum(1 for answer in self.answers if answer.status == 422)

    def versions_over_time(self) -> list[tuple[str, float, float, int]]:
        """``(version, first answer, last answer, answers)`` per run of consecutive answers of one version."""
        spans: list[list[Any]] = []
        for answer in sorted((a for a in self.answers if a.version), key=lambda a: a.done):
            if spans and spans[-1][0] == answer.version:
                spans[-1][2], spans[-1][3] = answer.done, spans[-1][3] + 1
            else:
                spans.append([answer.version, answer.done, answer.done, 1])
        return [tuple(span) for span in spans]  # type: ignore[misc]

    def live_accuracy(self) -> dict[str, tuple[float, int]]:
        """Accuracy of each version's answers on the shifted traffic, as the client knows the truth."""
        scored: dict[str, list[bool]] = {}
        for answer in self.answers:
            if answer.shifted and answer.version and answer.correct is not None:
                scored.setdefault(answer.version, []).append(answer.correct)
        return {version: (sum(right) / len(right), len(right)) for version, right in scored.items()}


def run_demo(settings: Settings, console: Console | None = None) -> DemoSummary:
    """Run the loop end to end and return what it produced; the deployment is always stopped."""
    console = console or Console(stderr=True)
    settings = _demo_settings(settings)
    if deployment.deployment_status(settings).proxy_alive:
        raise ServingError(
            f"A deployment already runs on this state folder ({settings.state_dir}); the demo deploys its own. "
            "Stop it with `mlops deploy stop`, or run the demo with another --state-dir."
        )
    summary = DemoSummary(tracking_uri=settings.tracking_uri_shown, metric=settings.model.metric)
    with _stage(summary, console, "validate + train + register"):
        summary.training = load_flow(settings, "training")(settings)
        _start_from(settings, summary)
    client = None
    try:
        with _stage(summary, console, "deploy (swap proxy + BentoML)"):
            state = deployment.deploy(settings)
            summary.served_version, summary.endpoint_url = state.backend.version, state.url
        already_logged = len(read_prediction_log(settings.predictions_dir))
        client = _client(settings, state.url, summary)
        with _stage(summary, console, "production traffic + labels"):
            client.start()
            _wait(lambda: client.shifted_answered >= SHIFTED_BEFORE_MONITORING, client, console, "traffic")
            _wait(lambda: client.labels_accepted + client.labels_refused >= len(client.records) + SHIFTED_BEFORE_MONITORING
                  - LABEL_BATCH, client, console, "labels")
            logged = _wait_for_log(settings, already_logged)
        window = settings.monitoring.model_copy(update={"window_rows": logged})
        with _stage(summary, console, "monitor + retrain + swap"):
            summary.monitoring = load_flow(settings, "monitoring")(settings.model_copy(update={"monitoring": window}))
        champion = _deployed_version(settings)
        if champion is not None and champion != summary.served_version:
            with _stage(summary, console, "traffic on the new champion"):
                _wait(lambda: client.answers_from(champion) >= ANSWERS_AFTER_SWAP, client, console, "traffic", timeout=30)
    finally:
        try:
            if client is not None:
                client.stop()
                summary.answers = list(client.answers)
                summary.labels_accepted, summary.labels_refused = client.labels_accepted, client.labels_refused
                summary.notes += client.label_problems[:3]
        finally:  # whatever happened, the processes the demo started are stopped (a second Ctrl-C waits)
            with processes.interrupts_deferred():
                deployment.stop_deployment(settings)
    summary.swap = _swap(settings, summary)
    _save_stage_times(settings, summary)
    return summary


def _demo_settings(settings: Settings) -> Settings:
    """The user's settings, with what a showcase needs: a retrain on every run, judged on accuracy.

    The cooldown and daily cap would block a second run on the same state folder; the
    quality floor makes the quality drop a trigger beside the drift.
    """
    monitoring = settings.monitoring.model_copy(update={
        "cooldown_minutes": 0,
        "max_retrains_per_day": 10**6,
        "quality_floor": DEMO_QUALITY_FLOOR if settings.monitoring.quality_floor is None else settings.monitoring.quality_floor,
    })
    model = settings.model
    if model.primary_metric is None and model.task == "classification":
        model = model.model_copy(update={"primary_metric": "accuracy"})
    return settings.model_copy(update={"monitoring": monitoring, "model": model})


def _start_from(settings: Settings, summary: DemoSummary) -> None:
    """On the bundled sample's state folder with a champion already, the fresh version becomes champion (audited).

    The story needs the bundled data's model at the start; a project's own data never
    forces its registry.
    """
    outcome = summary.training
    if outcome is None or outcome.decision.promoted or settings.data.name != SAMPLE_DATASET:
        return  # a project's own registry keeps the champion its gate chose
    version = outcome.registered.version
    terms = contract.load_contract(settings.data.contract)
    holdout = training.split_for_contract(data.load_table(settings.data.training), terms, settings.model)
    tracking.promote_version(settings, version, holdout, force=True,
                             reason="mlops demo: the story starts from the model trained on the bundled data")
    summary.notes.append(f"v{version} made champion for the demo (was v{outcome.decision.champion_version}).")


def _client(settings: Settings, url: str, summary: DemoSummary) -> ProductionClient:
    traffic = data.production_traffic(settings)
    before, after = traffic.before, traffic.after
    summary.traffic_after = traffic.after_is
    target = settings.data.target
    headers = {}
    if os.environ.get(settings.serving.api_key_env):
        headers["authorization"] = f"Bearer {os.environ[settings.serving.api_key_env]}"

    def records(frame: Any) -> list[dict]:
        return json.loads(frame.drop(columns=[target]).to_json(orient="records"))

    truth = (before[target].tolist(), after[target].tolist())
    return ProductionClient(url, records(before), records(after), truth, headers,
                            score_answers=settings.model.task == "classification")


def _wait(done: Any, client: ProductionClient, console: Console, what: str, timeout: float = 120.0) -> None:
    """Until ``done()``; the client dying or the timeout is a ServingError naming what was awaited."""
    deadline = time.monotonic() + timeout
    while not done():
        if not client.is_alive():
            raise ServingError(f"The demo client stopped while waiting for {what}.")
        if time.monotonic() > deadline:
            failed = sum(1 for answer in client.answers if answer.status != 200)
            raise ServingError(f"The demo waited {timeout:g} s for {what}: {len(client.answers)} requests, {failed} failed.")
        time.sleep(0.1)


def _wait_for_log(settings: Settings, already: int, timeout: float = 15.0) -> int:
    """The endpoint logs asynchronously: the predictions this run logged, once they are on disk."""
    deadline = time.monotonic() + timeout
    logged = 0
    while time.monotonic() < deadline:
        logged = len(read_prediction_log(settings.predictions_dir)) - already
        if logged >= SHIFTED_BEFORE_MONITORING:
            break
        time.sleep(0.2)
    return max(logged, 1)


def _deployed_version(settings: Settings) -> str | None:
    state = deployment.deployment_status(settings).state
    return state.backend.version if state else None


def _swap(settings: Settings, summary: DemoSummary) -> Swap | None:
    """The swap to the retrained version (from the deployment's events) and the answers inside it."""
    for event in reversed(deployment.read_events(settings)):
        if event.get("event") == "deployed" and event.get("replaced") == summary.served_version:
            finished = datetime.fromisoformat(event["timestamp"]).timestamp()
            started = datetime.fromisoformat(event["started_at"]).timestamp() if "started_at" in event else (
                finished - float(event.get("ready_seconds", 0.0)))
            inside = [a for a in summary.answers if started <= a.done and a.sent <= finished]
            failed = sum(1 for answer in inside if answer.status not in (200, 422))
            return Swap(summary.served_version or "", str(event["version"]), started, finished, len(inside), failed)
    return None


def _save_stage_times(settings: Settings, summary: DemoSummary) -> None:
    """Stage timings as JSON beside the reports, for benchmarks and dashboards."""
    path = settings.reports_dir / "demo-stages.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary.stage_seconds, indent=2) + "\n", encoding="utf-8")


@contextmanager
def _stage(summary: DemoSummary, console: Console, name: str) -> Iterator[None]:
    started = time.perf_counter()
    with console.status(f"[bold]{name}[/bold] …"):
        yield
    summary.stage_seconds[name] = time.perf_counter() - started
    console.print(f"[green]✓[/green] {name} ({summary.stage_seconds[name]:.1f} s)")
