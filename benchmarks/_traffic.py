"""A steady external client, run as its own process: records every answer's model version.

    python benchmarks/_traffic.py URL RECORDS.json OUT.jsonl STOP_FILE [--rate 40] [--concurrency 4]

Sends one record per request to ``URL/predict`` at about ``--rate`` requests/s (spread
over ``--concurrency`` connections, cycling through the records) until ``STOP_FILE``
exists, then writes one JSON line per request: ``sent`` and ``done`` (Unix seconds),
``status`` (0 when no answer came) and ``version`` (the answering model version).
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


@dataclass(frozen=True)
class Answer:
    """One request: when it left, when its answer came, and which version answered."""

    sent: float
    done: float
    status: int
    version: str | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


def start_client(url: str, records: list[dict], folder: Path, rate: float = 40.0, concurrency: int = 4):
    """Start the client process; returns ``(process, stop_file, out_file)``. Touch ``stop_file`` to end it."""
    import subprocess
    import sys

    folder.mkdir(parents=True, exist_ok=True)
    records_file, out, stop = folder / "records.json", folder / "answers.jsonl", folder / "stop"
    records_file.write_text(json.dumps(records))
    stop.unlink(missing_ok=True)
    command = [sys.executable, __file__, url, str(records_file), str(out), str(stop)]
    command += ["--rate", str(rate), "--concurrency", str(concurrency)]
    return subprocess.Popen(command), stop, out


def read_answers(path: Path) -> list[Answer]:
    return [Answer(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


async def _send(client, records: list[dict], stop: Path, interval: float, offset: int, answers: list[Answer]) -> None:
    import httpx

    index = offset
    next_at = time.monotonic()
    while not stop.exists():
        record = records[index % len(records)]
        index += 1
        sent = time.time()
        try:
            response = await client.post("/predict", json={"records": [record]})
            version = response.json().get("model_version") if response.status_code == 200 else None
            answers.append(Answer(sent, time.time(), response.status_code, version, "" if version else response.text[:200]))
        except (httpx.HTTPError, ValueError) as exc:
            answers.append(Answer(sent, time.time(), 0, None, repr(exc)[:200]))
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))


async def _run(url: str, records: list[dict], stop: Path, rate: float, concurrency: int) -> list[Answer]:
    import httpx

    answers: list[Answer] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        loops = [_send(client, records, stop, concurrency / rate, i, answers) for i in range(concurrency)]
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
    args = parser.parse_args()
    records = json.loads(args.records.read_text())
    answers = asyncio.run(_run(args.url, records, args.stop, args.rate, args.concurrency))
    args.out.write_text("".join(json.dumps(asdict(answer)) + "\n" for answer in answers))


if __name__ == "__main__":
    main()
