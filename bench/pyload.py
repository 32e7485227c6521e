"""The Python load generator used when wrk is not installed (reads a JSON spec on stdin)."""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time

import httpx


async def _worker(
    client: httpx.AsyncClient, spec: dict[str, object], deadline: float, latencies: list[float]
) -> int:
    errors = 0
    body = spec["body"]
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            response = await client.request(
                str(spec["method"]),
                str(spec["url"]),
                headers=dict(spec["headers"]),  # type: ignore[call-overload]
                content=body.encode() if isinstance(body, str) else None,
            )
            if response.status_code >= 400:
                errors += 1
        except httpx.HTTPError:
            errors += 1
        latencies.append((time.perf_counter() - started) * 1000)
    return errors


async def main() -> None:
    spec = json.loads(sys.stdin.read())
    connections = int(spec["connections"])
    duration = float(spec["duration_s"])
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        deadline = started + duration
        errors = sum(
            await asyncio.gather(
                *(_worker(client, spec, deadline, latencies) for _ in range(connections))
            )
        )
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    print(
        json.dumps(
            {
                "driver": "python-httpx",
                "connections": connections,
                "duration_s": duration,
                "requests": len(latencies),
                "errors": errors,
                "rps": round(len(latencies) / elapsed, 1),
                "p50_ms": round(cuts[49], 3),
                "p90_ms": round(cuts[89], 3),
                "p99_ms": round(cuts[98], 3),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
