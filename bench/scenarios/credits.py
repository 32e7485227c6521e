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

A second figure, ``ledger_in_process``, drives the ledger service itself the same way
(as many concurrent callers as connections, each reserving 1 credit and committing it,
through the process's group commit) on a fresh database of the same backend: the
ledger's own work (lock, lots, hold, balanced transfer, audit entry, commit) without
HTTP, authentication, Tollway's own API metering and the abuse battery. The gap
between the two figures is what the HTTP stack costs.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench.scenarios.setup import PASSWORD, new_account, override_limits
from bench.server import Server, running_server
from tollway import migrations
from tollway.accounts.models import Organization
from tollway.config import Settings, ensure_secrets
from tollway.db import Database
from tollway.entitlements.writer import GroupCommitter
from tollway.kit.clock import utcnow
from tollway.kit.ids import new_id
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service
from tollway.observability.logging import configure_logging

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


async def _drive_ledger(database_url: str, callers: int, duration_s: float) -> dict[str, Any]:
    settings = ensure_secrets(
        Settings(
            database_url=database_url,
            data_dir=Path(tempfile.mkdtemp(prefix="tollway-bench-ledger-")),
            env="test",
            log_level="warning",
        )
    )
    await asyncio.to_thread(migrations.upgrade, settings)
    database = Database(settings)
    committer = GroupCommitter(database)
    organization_id = new_id("org")
    try:
        async with database.transaction() as session:
            session.add(Organization(id=organization_id, name="Bench ledger"))
        async with database.transaction() as session:
            await grant_service.grant(
                session,
                organization_id=organization_id,
                amount=1_000_000_000,
                source="admin",
                now=utcnow(),
                reason="bench",
            )
        pairs = 0

        async def caller(deadline: float) -> None:
            nonlocal pairs
            while time.perf_counter() < deadline:
                hold = await committer.run_keeping_errors(
                    lambda session: hold_service.reserve(
                        session,
                        organization_id=organization_id,
                        amount=1,
                        now=utcnow(),
                        subject="bench",
                    )
                )
                await committer.run_keeping_errors(
                    lambda session, held=hold.id: hold_service.commit(
                        session, organization_id=organization_id, reservation_id=held, now=utcnow()
                    )
                )
                pairs += 1

        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(caller(started + duration_s) for _ in range(callers)))
        elapsed = time.perf_counter() - started
        return {
            "callers": callers,
            "duration_s": duration_s,
            "pairs": pairs,
            "pairs_per_s": round(pairs / elapsed, 1),
            "cpu_us_per_operation": round((time.process_time() - cpu) / (2 * pairs) * 1e6, 1),
        }
    finally:
        await database.dispose()


def credits_reserve_commit(server: Server, options: Any) -> dict[str, Any]:
    """Reserve + commit pairs per second (goal: >= 1,500 on SQLite, one worker)."""
    database_url = None if server.database_url.startswith("sqlite") else server.database_url
    redis_url = os.environ.get("BENCH_REDIS_URL")
    with running_server(database_url=database_url, redis_url=redis_url) as own:
        key = _setup(own)
        figures = asyncio.run(_drive(own.base_url, key, options.connections, options.duration_s))
    configure_logging(level="warning", json=True)
    with tempfile.TemporaryDirectory(prefix="tollway-bench-ledger-") as tmp:
        engine_url = database_url or f"sqlite+aiosqlite:///{Path(tmp) / 'ledger.db'}"
        engine = asyncio.run(_drive_ledger(engine_url, options.connections, options.duration_s))
    return {"goal_pairs_per_s": 1500, "pairs": figures, "ledger_in_process": engine}
