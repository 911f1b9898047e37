"""The load generator: a real HTTP client in its own process, as the issue asks.

    .venv/bin/python benchmarks/_load.py URL --body FILE [--content-type T]
        [--concurrency 32] [--seconds 5] [--warmup 1] [--header 'Name: value']

Keeps ``concurrency`` keep-alive connections busy for ``seconds`` (after ``warmup``
seconds not counted), each sending the same body and waiting for the whole answer, and
prints one JSON line: requests/s, p50/p99 latency in ms, non-2xx answers and transport
errors. aiohttp on uvloop costs far less CPU per request than the servers it measures,
which matters when client and servers share the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path


async def _run(url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, warmup: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    counts = {"non_2xx": 0, "errors": 0}
    started = time.monotonic()
    measure_from, deadline = started + warmup, started + warmup + seconds

    async def connection(session: aiohttp.ClientSession) -> None:
        while (now := time.monotonic()) < deadline:
            sent = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    ok = 200 <= response.status < 300
            except (TimeoutError, aiohttp.ClientError):
                ok = False
                counts["errors"] += 1
                await asyncio.sleep(0.01)  # a refused connection fails fast: don't spin
            if now >= measure_from:
                latencies.append(time.perf_counter() - sent)
                counts["non_2xx"] += not ok

    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(connection(session) for _ in range(concurrency)))
    return _summary(latencies, seconds, counts)


def _summary(latencies: list[float], seconds: float, counts: dict[str, int]) -> dict:
    latencies.sort()
    count = len(latencies)

    def percentile(share: float) -> float:
        return 1000 * latencies[min(count - 1, int(share * count))] if count else float("nan")

    return {"requests": count, "rps": count / seconds, "p50_ms": percentile(0.5), "p99_ms": percentile(0.99)} | counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--content-type", default="application/json")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable.")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    headers = {"Content-Type": args.content_type}
    headers.update(dict(item.split(": ", 1) for item in args.header))
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        load = _run(args.url, args.body.read_bytes(), headers, args.concurrency, args.seconds, args.warmup)
        result = runner.run(load)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
