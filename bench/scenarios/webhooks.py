"""``stripe_webhook_intake``: Stripe events in through ``/api/v1/webhooks/stripe``.

In-process (the application over ASGI, no HTTP server, no network), on a fresh database
of the bench's backend, Tollway on the ``stripe`` provider: 5,000 pending payments, then
one signed ``payment_intent.succeeded`` per payment posted by 32 concurrent clients
(signature check on the raw body, insert into ``webhook_events``, 200), then the same
5,000 again (duplicates: answered, nothing stored), then the processing sweep applies
them (payments succeeded, outbox events written). Figures: intake events/s, duplicate
events/s, applied events/s.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import insert

from tollway import migrations
from tollway.app import create_app
from tollway.config import Settings, ensure_secrets
from tollway.kit.clock import ManualClock
from tollway.kit.ids import new_id
from tollway.kit.sweeps import SweepContext
from tollway.observability.logging import configure_logging
from tollway.payments.models import Payment
from tollway.payments.providers.signature import sign
from tollway.payments.tasks import process_webhook_events

EVENTS = 5_000
CONCURRENCY = 32
SECRET = "whsec_bench_0123456789abcdef"  # noqa: S105 - a bench-only signing secret
START = datetime(2026, 3, 1, tzinfo=UTC)


def _events(payments: list[dict[str, Any]]) -> list[bytes]:
    bodies = []
    for number, payment in enumerate(payments):
        event = {
            "id": f"evt_bench_{number}",
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(START.timestamp()),
            "livemode": False,
            "data": {
                "object": {
                    "id": f"pi_bench_{number}",
                    "object": "payment_intent",
                    "amount": payment["amount_minor"],
                    "amount_received": payment["amount_minor"],
                    "currency": "usd",
                    "status": "succeeded",
                    "metadata": {"tollway_payment_id": payment["id"]},
                }
            },
        }
        bodies.append(json.dumps(event).encode())
    return bodies


async def _post_all(client: httpx.AsyncClient, bodies: list[bytes], clock: ManualClock) -> float:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    timestamp = int(clock.now().timestamp())

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post(
                "/api/v1/webhooks/stripe",
                content=body,
                headers={
                    "Stripe-Signature": sign([SECRET], timestamp, body),
                    "Content-Type": "application/json",
                },
            )
            assert response.status_code == 200, response.text

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return time.perf_counter() - began


async def _run(database_url: str, count: int) -> dict[str, Any]:
    settings = ensure_secrets(
        Settings(
            database_url=database_url,
            data_dir=Path(tempfile.mkdtemp()),
            env="test",
            log_level="error",
            migrate_on_start=False,
            run_worker_in_process=False,
            payment_provider="stripe",
            stripe_api_key=SecretStr("sk_test_bench"),
            stripe_webhook_secret=SecretStr(SECRET),
            stripe_api_base="http://127.0.0.1:9",
        )
    )
    await asyncio.to_thread(migrations.upgrade, settings)
    clock = ManualClock(START)
    app = create_app(settings, clock=clock)
    payments = [
        {
            "id": new_id("pay"),
            "organization_id": new_id("org"),
            "provider": "stripe",
            "purpose": "bench",
            "reference_id": new_id("inv"),
            "attempt": 1,
            "amount_minor": 1190,
            "currency": "usd",
            "status": "pending",
            "refunded_minor": 0,
            "created_at": START,
        }
        for _ in range(count)
    ]
    async with LifespanManager(app):
        async with app.state.database.transaction() as session:
            await session.execute(insert(Payment), payments)
        bodies = _events(payments)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            intake_s = await _post_all(client, bodies, clock)
            duplicate_s = await _post_all(client, bodies, clock)
        context = SweepContext(database=app.state.database, clock=clock, settings=settings)
        began = time.perf_counter()
        applied = 0
        while handled := await process_webhook_events(context):
            applied += handled
        apply_s = time.perf_counter() - began
    return {
        "events": count,
        "concurrency": CONCURRENCY,
        "intake_seconds": round(intake_s, 2),
        "intake_per_s": round(count / intake_s, 1),
        "duplicates_per_s": round(count / duplicate_s, 1),
        "applied": applied,
        "apply_seconds": round(apply_s, 2),
        "applied_per_s": round(applied / apply_s, 1),
    }


def stripe_webhook_intake(server: Any, options: Any, *, count: int = EVENTS) -> dict[str, Any]:
    """Stripe events posted in-process, stored, repeated, then applied by the sweep."""
    configure_logging(level="error", json=True)
    with tempfile.TemporaryDirectory(prefix="tollway-bench-webhooks-") as tmp:
        url = (
            server.database_url
            if server.database_url.startswith("postgresql")
            else f"sqlite+aiosqlite:///{Path(tmp) / 'webhooks.db'}"
        )
        return asyncio.run(_run(url, count))
