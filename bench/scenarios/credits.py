"""``credits_reserve_commit``: reserve + commit pairs per second over HTTP with an API key.

Set-up goes through the product as an operator would: ``tollway admin create`` makes a
platform admin, the HTTP API registers a customer, creates an API key and grants the
customer credits. Then every connection loops: ``POST /credits/reservations`` (1 credit)
and ``POST /credits/reservations/{id}/commit``.

The bench customer gets permissive overrides (``tollway catalog override``: no tier
rate limit or ``api`` quota on the API-key calls, and ``{"abuse": {...}}`` without a
per-minute limit or minimum gap), as an operator would give a customer standing for
many: the battery's checks and writes still run on every reserve (with the limits read
through the plans service), but one bench customer spends as fast as many real ones
would together.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.scenarios.setup import PASSWORD, new_account, override_limits
from bench.server import Server, running_server

PERMISSIVE_ABUSE_LIMITS = {
    "requests_per_minute": 1_000_000_000,
    "min_interval_seconds": 0,
    "fraud_credits_per_hour": 1_000_000_000_000,
}
ADMIN_EMAIL = "bench-admin@example.com"


def _setup(server: Server) -> str:
    """A funded customer's API key."""
    env = {
        **os.environ,
        "TOLLWAY_DATABASE_URL": server.database_url,
        "TOLLWAY_DATA_DIR": str(server.data_dir),
        "TOLLWAY_LOG_LEVEL": "warning",
    }
    executable = Path(sys.executable).with_name("tollway")
    subprocess.run(
        [str(executable), "admin", "create", "--email", ADMIN_EMAIL, "--password", PASSWORD],
        env=env,
        check=True,
        capture_output=True,
    )
    customer = new_account(server.base_url)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        admin = client.post("/api/v1/auth/login", json={"email": ADMIN_EMAIL, "password": PASSWORD})
        admin.raise_for_status()
        granted = client.post(
            "/api/v1/admin/credits/grant",
            json={
                "organization_id": customer.organization_id,
                "amount": 1_000_000_000,
                "reason": "bench",
            },
            headers={"Authorization": f"Bearer {admin.json()['access_token']}"},
        )
        granted.raise_for_status()
    override_limits(
        server.database_url,
        server.data_dir,
        customer.organization_id,
        {
            # Tollway's own API metered per API key: no tier limit, no monthly quota.
            "rate_limit_per_minute": None,
            "features": {"api": {"quota": None}},
            "abuse": PERMISSIVE_ABUSE_LIMITS,
        },
    )
    return customer.api_key


class _Connection:
    """A minimal keep-alive HTTP/1.1 client: the driver must cost less CPU than the server."""

    def __init__(self, host: str, port: int, key: str) -> None:
        self.host, self.port = host, port
        self.headers = (
            f"Host: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\n"
        )
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"POST {path} HTTP/1.1\r\n{self.headers}Content-Length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _drive(base_url: str, key: str, connections: int, duration_s: float) -> dict[str, Any]:
    url = urlsplit(base_url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    latencies: list[float] = []
    errors = 0

    async def worker(deadline: float) -> None:
        nonlocal errors
        connection = _Connection(host, port, key)
        try:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                status, body = await connection.post(
                    "/api/v1/credits/reservations", b'{"amount": 1}'
                )
                if status != 201:
                    errors += 1
                    continue
                reservation_id = json.loads(body)["id"]
                status, _ = await connection.post(
                    f"/api/v1/credits/reservations/{reservation_id}/commit", b"{}"
                )
                if status != 200:
                    errors += 1
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(started + duration_s) for _ in range(connections)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "driver": "python-asyncio-http11",
        "connections": connections,
        "duration_s": duration_s,
        "pairs": len(latencies),
        "errors": errors,
        "pairs_per_s": round(len(latencies) / elapsed, 1),
        "requests_per_s": round(2 * len(latencies) / elapsed, 1),
        "pair_p50_ms": round(cuts[49], 3),
        "pair_p90_ms": round(cuts[89], 3),
        "pair_p99_ms": round(cuts[98], 3),
    }


def credits_reserve_commit(server: Server, options: Any) -> dict[str, Any]:
    """Reserve + commit pairs per second (goal: >= 1,500 on SQLite, one worker)."""
    database_url = None if server.database_url.startswith("sqlite") else server.database_url
    redis_url = os.environ.get("BENCH_REDIS_URL")
    with running_server(database_url=database_url, redis_url=redis_url) as own:
        key = _setup(own)
        figures = asyncio.run(_drive(own.base_url, key, options.connections, options.duration_s))
    return {"goal_pairs_per_s": 1500, "pairs": figures}
