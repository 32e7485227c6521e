"""``billing_renewals``: a billing run renewing 10,000 subscriptions (goal >= 500/s end to end).

Runs what ``tollway billing run`` runs (:func:`tollway.billing.tasks.run_until_quiet`),
in-process, on a fresh database of the bench's backend, with the installed ports: the
real catalog (the shipped catalog file, made the active version the way the app does at
start-up) and the real credit ledger. 10,000 organizations on the catalog's Pro plan,
each with a sandbox card, ledger accounts and its plan assignment, all at their period
end.

Two figures, both wall clock and process CPU time per subscription:

- ``renew``: the renewal sweep alone: the period moved, the invoice (gapless number,
  tax, lines, the overage query) finalized, the off-session sandbox charge, the
  provider's signed event verified and stored, audit and outbox rows.
- ``end_to_end`` (the figure the goal is about): the whole billing run, i.e. the above
  plus the stored events applied: payments succeeded, invoices paid, each plan's token
  allotment granted as a balanced transfer in the ledger.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, insert, select

from tollway import migrations
from tollway.accounts.models import Organization
from tollway.billing import ports
from tollway.billing.models import Invoice, Subscription
from tollway.billing.tasks import renew_subscriptions, run_until_quiet
from tollway.config import Settings, ensure_secrets
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.ids import new_id
from tollway.kit.sweeps import SweepContext
from tollway.ledger.models import AccountKind, CreditAccount, CreditEntry, CreditGrant
from tollway.observability.logging import configure_logging
from tollway.payments.models import PaymentCustomer, PaymentMethod
from tollway.plans.models import OrganizationPlan
from tollway.plans.service.catalog import catalog_service

SUBSCRIPTIONS = 10_000
START = datetime(2026, 3, 1, tzinfo=UTC)
PLAN = "pro"


async def _seed(database: Database, count: int, *, catalog_version: int | None) -> None:
    """What 10,000 renewing customers have: an organization (billed in Germany, so the
    invoice is taxed), a sandbox customer and default card, the ledger accounts their
    earlier allotments made, the plan assignment billing wrote, and a subscription whose
    period ends at ``START``."""
    anchor = datetime(2026, 2, 1, tzinfo=UTC)  # one month before START: period 0
    async with database.transaction() as session:
        for offset in range(0, count, 1000):
            organizations, customers, methods, subscriptions = [], [], [], []
            accounts, assignments = [], []
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
                        "plan_id": PLAN,
                        "catalog_version": catalog_version,
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
                assignments.append(
                    {
                        "organization_id": org,
                        "plan_id": PLAN,
                        "license_state": "active",
                        "catalog_version": catalog_version,
                        "updated_at": anchor,
                    }
                )
                accounts.extend(
                    {
                        "id": new_id("cacc"),
                        "organization_id": org,
                        "kind": kind.value,
                        "balance": 0,
                        "low_balance_notified": False,
                        "created_at": anchor,
                    }
                    for kind in AccountKind
                )
            await session.execute(insert(Organization), organizations)
            await session.execute(insert(PaymentCustomer), customers)
            await session.execute(insert(PaymentMethod), methods)
            await session.execute(insert(OrganizationPlan), assignments)
            await session.execute(insert(CreditAccount), accounts)
            await session.execute(insert(Subscription), subscriptions)


async def _count(database: Database, statement: Any) -> int:
    async with database.transaction(write=False) as session:
        return int((await session.execute(statement)).scalar_one())


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
    # The installed ports (no test doubles): plans/metering and the ledger.
    ports.use_catalog(None)
    ports.use_credits(None)
    try:
        version = await catalog_service.start(database, path=settings.catalog_path, now=START)
        await _seed(database, count, catalog_version=version)
        context = SweepContext(database=database, clock=ManualClock(START), settings=settings)
        began, cpu_began = time.perf_counter(), time.process_time()
        renewed = 0
        while handled := await renew_subscriptions(context):
            renewed += handled
        renew_s = time.perf_counter() - began
        renew_cpu_s = time.process_time() - cpu_began
        await run_until_quiet(context)
        total_s = time.perf_counter() - began
        total_cpu_s = time.process_time() - cpu_began
        paid = await _count(
            database, select(func.count()).select_from(Invoice).where(Invoice.status == "paid")
        )
        grants = await _count(
            database,
            select(func.count()).select_from(CreditGrant).where(CreditGrant.source == "allotment"),
        )
        entries_sum = await _count(database, select(func.coalesce(func.sum(CreditEntry.amount), 0)))
        return {
            "subscriptions": count,
            "renewed": renewed,
            "invoices_paid": paid,
            "allotments_granted": grants,
            "ledger_entries_sum": entries_sum,
            "renew": {
                "seconds": round(renew_s, 2),
                "per_s": round(renewed / renew_s, 1),
                "cpu_ms_per_subscription": round(renew_cpu_s * 1000 / max(1, renewed), 3),
            },
            "end_to_end": {
                "seconds": round(total_s, 2),
                "per_s": round(renewed / total_s, 1),
                "cpu_ms_per_subscription": round(total_cpu_s * 1000 / max(1, renewed), 3),
            },
            "goal": {"end_to_end_per_s": ">= 500"},
        }
    finally:
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
