"""A steady external client, run as its own process: records every answer's model version.

    python benchmarks/_traffic.py URL RECORDS.json OUT.jsonl STOP_FILE [--rate 40] [--concurrency 4] [--labels L.json]

Sends one record per request to ``URL/predict`` at about ``--rate`` requests/s (spread
over ``--concurrency`` connections, cycling through the records) until ``STOP_FILE``
exists, then writes one JSON line per request: ``sent`` and ``done`` (Unix seconds),
``status`` (0 when no answer came) and ``version`` (the answering model version).
With ``--labels`` (one true label per record), every ``LABEL_BATCH`` answered requests of a
connection have their labels posted to ``URL/labels``, as ground truth arriving later.
Its own process, so the client's CPU and event loop never share the measured server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Answer", "read_answers", "start_client"]

LABEL_BATCH = 20


@dataclass(frozen=True)
class Answer:
    """One request: when it left, when its answer came, and which version answered."""

    sent: float
    done: float
    status: int
    version: str | None
    error: str = ""
    correct: bool | None = None  # with labels: whether the prediction was the true label

    @property
    def ok(self) -> bool:
        return self.status == 200


def start_client(url: str, records: list[dict], folder: Path, rate: float = 40.0, concurrency: int = 4,
                 labels: list | None = None):
    """Start the client process; returns ``(process, stop_file, out_file)``. Touch ``stop_file`` to end it."""
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    records_file, out, stop = folder / "records.json", folder / "answers.jsonl", folder / "stop"
    records_file.write_text(json.dumps(records))
    stop.unlink(missing_ok=True)
    command = [sys.executable, __file__, url, str(records_file), str(out), str(stop)]
    command += ["--rate", str(rate), "--concurrency", str(concurrency)]
    if labels is not None:
        (folder / "labels.json").write_text(json.dumps(labels))
        command += ["--labels", str(folder / "labels.json")]
    return subprocess.Popen(command), stop, out


def read_answers(path: Path) -> list[Answer]:
    return [Answer(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


async def _send(client, records: list[dict], labels: list | None, stop: Path, interval: float, offset: int,
                answers: list[Answer]) -> None:
    import httpx

    index, pending = offset, []
    next_at = time.monotonic()
    while not stop.exists():
        position = index % len(records)
        index += 1
        sent = time.time()
        try:
            response = await client.post("/predict", json={"records": [records[position]]})
            body = response.json() if response.status_code == 200 else {}
            version = body.get("model_version")
            correct = None
            if labels is not None and version:
                correct = body["predictions"][0] == labels[position]
                pending.append({"request_id": body["request_id"], "record": 0, "label": labels[position]})
            answers.append(Answer(sent, time.time(), response.status_code, version, "" if version else response.text[:200], correct))
        except (httpx.HTTPError, ValueError) as exc:
            answers.append(Answer(sent, time.time(), 0, None, repr(exc)[:200]))
        if len(pending) >= LABEL_BATCH:
            pending = await _post_labels(client, pending)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _post_labels(client, pending: list[dict]) -> list[dict]:
    """Post the labels; kept for the next try when the endpoint did not take them."""
    import httpx

    try:
        response = await client.post("/labels", json={"labels": pending})
    except httpx.HTTPError:
        return pending
    return [] if response.status_code in (200, 422) else pending


async def _run(url: str, records: list[dict], labels: list | None, stop: Path, rate: float, concurrency: int) -> list[Answer]:
    import httpx

    answers: list[Answer] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        loops = [_send(client, records, labels, stop, concurrency / rate, i, answers) for i in range(concurrency)]
        await asyncio.gather(*loops)
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("records", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("stop", type=Path)
    parser.add_argument("--rate", type=float, default=40.0, help="Requests per second, all connections together.")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--labels", type=Path, help="JSON list: the true label of each record, posted to /labels.")
    args = parser.parse_args()
    records = json.loads(args.records.read_text())
    labels = json.loads(args.labels.read_text()) if args.labels else None
    answers = asyncio.run(_run(args.url, records, labels, args.stop, args.rate, args.concurrency))
    args.out.write_text("".join(json.dumps(asdict(answer)) + "\n" for answer in answers))


if __name__ == "__main__":
    main()
