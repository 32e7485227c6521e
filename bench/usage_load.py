"""Batch-ingestion load (``python -m bench.usage_load``, JSON spec on stdin).

wrk repeats one body, which would make every batch after the first a duplicate; this
generator sends batches of fresh events (unique idempotency keys) over a few
keep-alive connections and reports events per second. Every event counted was
committed before its answer (the server answers only after commit).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import sys
import time
import uuid

import httpx
import orjson

_counter = itertools.count()


def _batch(prefix: str, size: int) -> bytes:
    start = next(_counter) * size
    return orjson.dumps(
        {
            "events": [
                {"meter": "sync_runs", "quantity": 1, "idempotency_key": f"{prefix}-{start + i}"}
                for i in range(size)
            ]
        }
    )


async def _worker(
    client: httpx.AsyncClient,
    spec: dict[str, object],
    deadline: float,
    latencies: list[float],
    totals: dict[str, int],
) -> None:
    prefix = uuid.uuid4().hex[:12]
    size = int(spec["batch_size"])  # type: ignore[call-overload]
    while time.perf_counter() < deadline:
        body = _batch(prefix, size)
        started = time.perf_counter()
        try:
            response = await client.post(
                str(spec["url"]),
                headers={**dict(spec["headers"]), "content-type": "application/json"},  # type: ignore[call-overload]
                content=body,
            )
        except httpx.HTTPError:
            totals["errors"] += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            totals["errors"] += 1
            continue
        totals["accepted"] += int(response.json()["accepted"])


async def main() -> None:
    spec = json.loads(sys.stdin.read())
    connections = int(spec["connections"])
    duration = float(spec["duration_s"])
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    totals = {"accepted": 0, "errors": 0}
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        started = time.perf_counter()
        deadline = started + duration
        await asyncio.gather(
            *(_worker(client, spec, deadline, latencies, totals) for _ in range(connections))
        )
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(
        json.dumps(
            {
                "driver": "python-httpx-batches",
                "connections": connections,
                "duration_s": duration,
                "batch_size": spec["batch_size"],
                "requests": len(latencies),
                "errors": totals["errors"],
                "events": totals["accepted"],
                "events_per_s": round(totals["accepted"] / elapsed, 1),
                "rps": round(len(latencies) / elapsed, 1),
                "p50_ms": round(cuts[49], 3),
                "p90_ms": round(cuts[89], 3),
                "p99_ms": round(cuts[98], 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
