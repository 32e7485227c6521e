"""``billing_renewals``: renew 10,000 subscriptions (goal >= 500 subscriptions/s).

Runs the billing sweeps in-process on a fresh database of the bench's backend, as
``tollway billing run`` does: 10,000 organizations on a paid plan with a sandbox card,
all at their period end. Two figures: the renewal sweep alone (invoice, number,
off-session charge, the provider's signed event stored) and end to end (plus the
events applied: invoices paid, allotments granted).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from tests.fixtures.billing import MemoryCredits, StaticCatalog

from tollway import migrations
from tollway.accounts.models import Organization
from tollway.billing import ports
from tollway.billing.models import Subscription
from tollway.billing.tasks import renew_subscriptions, run_until_quiet
from tollway.config import Settings, ensure_secrets
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.ids import new_id
from tollway.kit.sweeps import SweepContext
from tollway.observability.logging import configure_logging
from tollway.payments.models import PaymentCustomer, PaymentMethod

SUBSCRIPTIONS = 10_000
START = datetime(2026, 3, 1, tzinfo=UTC)


async def _seed(database: Database, count: int) -> None:
    anchor = START - timedelta(days=31)
    async with database.transaction() as session:
        for offset in range(0, count, 1000):
            organizations, customers, methods, subscriptions = [], [], [], []
            for _ in range(min(1000, count - offset)):
                org = new_id("org")
                organizations.append(
                    {
                        "id": org,
                        "name": f"Bench {org}",
                        "billing_country": "DE",
                        "created_at": anchor,
                    }
                )
                customers.append(
                    {
                        "id": new_id("cus"),
                        "organization_id": org,
                        "provider": "sandbox",
                        "provider_ref": f"cus_sbx_{org}",
                        "created_at": anchor,
                    }
                )
                methods.append(
                    {
                        "id": new_id("pm"),
                        "organization_id": org,
                        "provider": "sandbox",
                        "provider_ref": f"pm_sbx_ok_{org}",
                        "brand": "visa",
                        "last4": "4242",
                        "exp_month": 12,
                        "exp_year": 2030,
                        "is_default": True,
                        "created_at": anchor,
                    }
                )
                subscriptions.append(
                    {
                        "id": new_id("sub"),
                        "organization_id": org,
                        "is_current": True,
                        "plan_id": "pro",
                        "status": "active",
                        "currency": "usd",
                        "billing_anchor": anchor,
                        "period_index": 0,
                        "current_period_start": anchor,
                        "current_period_end": START,
                        "cancel_at_period_end": False,
                        "license_state": "active",
                        "failed_attempts": 0,
                        "allotment_granted_for": anchor,
                        "created_at": anchor,
                    }
                )
            await session.execute(insert(Organization), organizations)
            await session.execute(insert(PaymentCustomer), customers)
            await session.execute(insert(PaymentMethod), methods)
            await session.execute(insert(Subscription), subscriptions)


async def _run(database_url: str, count: int) -> dict[str, Any]:
    settings = ensure_secrets(
        Settings(
            database_url=database_url,
            data_dir=Path(tempfile.mkdtemp()),
            env="test",
            log_level="warning",
        )
    )
    await asyncio.to_thread(migrations.upgrade, settings)
    database = Database(settings)
    ports.use_catalog(StaticCatalog())
    ledger = MemoryCredits()
    ports.use_credits(ledger)
    try:
        await _seed(database, count)
        context = SweepContext(database=database, clock=ManualClock(START), settings=settings)
        began = time.perf_counter()
        renewed = 0
        while handled := await renew_subscriptions(context):
            renewed += handled
        renew_s = time.perf_counter() - began
        await run_until_quiet(context)
        total_s = time.perf_counter() - began
        return {
            "subscriptions": count,
            "renewed": renewed,
            "allotments_granted": len(ledger.grants),
            "renew_seconds": round(renew_s, 2),
            "renewals_per_s": round(renewed / renew_s, 1),
            "end_to_end_seconds": round(total_s, 2),
            "end_to_end_per_s": round(renewed / total_s, 1),
            "goal": {"renewals_per_s": ">= 500"},
        }
    finally:
        ports.use_catalog(None)
        ports.use_credits(None)
        await database.dispose()


def billing_renewals(server: Any, options: Any, *, count: int = SUBSCRIPTIONS) -> dict[str, Any]:
    """Renew ``count`` subscriptions through the billing sweeps (in-process)."""
    configure_logging(level="warning", json=True)
    with tempfile.TemporaryDirectory(prefix="tollway-bench-billing-") as tmp:
        url = (
            server.database_url
            if server.database_url.startswith("postgresql")
            else f"sqlite+aiosqlite:///{Path(tmp) / 'billing.db'}"
        )
        return asyncio.run(_run(url, count))
