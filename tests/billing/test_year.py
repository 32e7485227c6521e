"""A year on the test clock, through the HTTP API only, with amounts computed by hand.

Organization in Germany (19 % VAT, exclusive). Pro is 29.00 USD a month with a
14-day trial and 1,000 tokens; Business is 99.00 USD with 5,000 tokens. AI features
degrade at once when a payment fails, sync when grace (14 days) ends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from fastapi import FastAPI

from tests.fixtures.billing import (
    BillingAccount,
    MemoryCredits,
    StaticCatalog,
    add_card,
    advance,
)
from tollway.kit.clock import ManualClock

DAY = 86_400


def at(month: int, day: int, year: int = 2026) -> datetime:
    return datetime(year, month, day, 12, 0, tzinfo=UTC)


def moment(value: Any) -> datetime:
    return datetime.fromisoformat(str(value))


async def subscription(client: httpx.AsyncClient, account: BillingAccount) -> dict[str, Any]:
    response = await client.get("/api/v1/billing/subscription", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def invoices(client: httpx.AsyncClient, account: BillingAccount) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/billing/invoices?limit=50", headers=account.headers)
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return sorted(items, key=lambda item: item["number"])


async def license_claims(
    client: httpx.AsyncClient, account: BillingAccount, clock: ManualClock
) -> dict[str, Any]:
    """Verify the license token offline, as a CLI would, with the published JWKS."""
    token = (await client.post("/api/v1/license/token", headers=account.headers)).json()["token"]
    jwks = (await client.get("/api/v1/license/public-key")).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    claims: dict[str, Any] = jwt.decode(
        token, key, algorithms=["EdDSA"], options={"verify_exp": False, "verify_iat": False}
    )
    assert claims["exp"] > clock.now().timestamp()
    return claims


class TestAYearOnTheTestClock:
    async def test_trial_renewals_upgrade_dunning_grace_recovery_and_cancel(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        account: BillingAccount,
        catalog: StaticCatalog,
        ledger: MemoryCredits,
    ) -> None:
        org = account.organization_id
        assert clock.now() == at(1, 15)

        # Jan 15: every organization starts on Free (100 tokens a month); reading the
        # subscription answers that view and books nothing (reads never write).
        sub = await subscription(client, account)
        assert (sub["id"], sub["plan"], sub["status"], sub["license_state"]) == (
            None,
            "free",
            "active",
            "active",
        )
        assert ledger.granted(org) == []

        # A paid plan needs a card; a declined card and bad fields are refused.
        refused = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert refused.status_code == 402
        assert refused.json()["code"] == "payment_method_required"
        assert "/api/v1/billing/payment-methods" in refused.json()["detail"]
        declined = await add_card(client, account, "4000000000000002")
        assert (declined.status_code, declined.json()["code"]) == (402, "card_declined")
        bad = await add_card(client, account, "4242424242424241")
        assert (bad.status_code, bad.json()["code"]) == (422, "invalid_card")
        card = await add_card(client, account, "4242 4242 4242 4242")
        assert card.status_code == 201
        assert (card.json()["brand"], card.json()["last4"]) == ("visa", "4242")
        unknown = await client.put(
            "/api/v1/billing/subscription", json={"plan": "platinum"}, headers=account.headers
        )
        assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_plan")
        same = await client.put(
            "/api/v1/billing/subscription", json={"plan": "free"}, headers=account.headers
        )
        assert (same.status_code, same.json()["code"]) == (409, "plan_unchanged")

        # Pro starts with a 14-day trial and its 1,000 tokens; no invoice yet.
        started = await client.put(
            "/api/v1/billing/subscription", json={"plan": "pro"}, headers=account.headers
        )
        assert started.status_code == 200
        assert started.json()["status"] == "trialing"
        assert moment(started.json()["trial_end"]) == at(1, 29)
        assert ledger.granted(org)[-1] == (1000, "allotment")
        assert await invoices(client, account) == []
        claims = await license_claims(client, account, clock)
        assert (claims["plan"], claims["license_state"]) == ("pro", "active")
        assert claims["features"] == {"ai.generate": True, "sync": True, "offline": True}

        # Jan 29: the trial ends; period [Jan 29, Feb 28) (Feb has no 29th) is invoiced:
        # 29.00 + 19 % = 29.00 + 5.51 = 34.51, paid by the card.
        await advance(client, account, 14 * DAY)
        sub = await subscription(client, account)
        assert sub["status"] == "active"
        assert (moment(sub["current_period_start"]), moment(sub["current_period_end"])) == (
            at(1, 29),
            at(2, 28),
        )
        [first] = await invoices(client, account)
        assert (first["number"], first["status"]) == ("TW-2026-000001", "paid")
        assert (first["subtotal"], first["tax"], first["total"]) == (2900, 551, 3451)
        assert ledger.grants[-1].amount == 1000
        assert ledger.grants[-1].expires_at == at(2, 28)

        # Feb 28: renewal with overage: 12,345 API calls, 10,000 included, 1.00 per
        # started 1,000 -> 3 blocks = 3.00. Subtotal 32.00, VAT 19 % = 6.08, total 38.08.
        catalog.usage_by_meter[(org, "api_calls")] = 12_345
        await advance(client, account, 30 * DAY)
        catalog.usage_by_meter.clear()
        second = (await invoices(client, account))[1]
        assert (second["number"], second["status"]) == ("TW-2026-000002", "paid")
        assert (second["subtotal"], second["tax"], second["total"]) == (3200, 608, 3808)
        detail = (
            await client.get(f"/api/v1/billing/invoices/{second['id']}", headers=account.headers)
        ).json()
        assert [(line["kind"], line["amount"]) for line in detail["lines"]] == [
            ("base", 2900),
            ("overage", 300),
        ]

        # Mar 10: upgrade to Business, 19 of the period's 29 days left.
        # Credit 2900 * 19/29 = 1900.00 -> 1900; charge 9900 * 19/29 = 6486.21 -> 6486;
        # subtotal 4586, VAT 4586 * 0.19 = 871.34 -> 871, total 5457.
        await advance(client, account, 10 * DAY)
        upgraded = await client.put(
            "/api/v1/billing/subscription", json={"plan": "business"}, headers=account.headers
        )
        assert upgraded.status_code == 200
        assert (upgraded.json()["plan"], upgraded.json()["status"]) == ("business", "active")
        assert moment(upgraded.json()["current_period_end"]) == at(3, 29)
        await advance(client, account, 0)
        third = (await invoices(client, account))[2]
        assert (third["number"], third["status"], third["billing_reason"]) == (
            "TW-2026-000003",
            "paid",
            "subscription_update",
        )
        assert (third["subtotal"], third["tax"], third["total"]) == (4586, 871, 5457)
        lines = (
            await client.get(f"/api/v1/billing/invoices/{third['id']}", headers=account.headers)
        ).json()["lines"]
        assert [(line["kind"], line["amount"]) for line in lines] == [
            ("proration_credit", -1900),
            ("proration_charge", 6486),
        ]
        assert ledger.grants[-1].amount == 4000  # Business's extra tokens for this period

        # Mar 29: Business renews: 99.00 + 18.81 = 117.81.
        await advance(client, account, 19 * DAY)
        fourth = (await invoices(client, account))[3]
        assert (fourth["number"], fourth["status"], fourth["total"]) == (
            "TW-2026-000004",
            "paid",
            11781,
        )
        assert ledger.grants[-1].amount == 5000

        # Apr 5: the customer's new card attaches, but every charge on it fails.
        await advance(client, account, 7 * DAY)
        assert (await add_card(client, account, "4000000000000341")).status_code == 201
        grants_before = len(ledger.grants)

        # Apr 29: the renewal fails -> past_due, license in grace until May 13; AI off,
        # sync kept; open holds released; no allotment for an unpaid period.
        await advance(client, account, 24 * DAY)
        sub = await subscription(client, account)
        assert (sub["status"], sub["license_state"]) == ("past_due", "grace")
        assert moment(sub["grace_ends_at"]) == at(5, 13)
        assert moment(sub["next_retry_at"]) == at(5, 1)
        fifth = (await invoices(client, account))[4]
        assert (fifth["number"], fifth["status"], fifth["total"]) == (
            "TW-2026-000005",
            "open",
            11781,
        )
        assert [when for _, when in ledger.releases] == [at(4, 29)]
        assert len(ledger.grants) == grants_before
        claims = await license_claims(client, account, clock)
        assert claims["license_state"] == "grace"
        assert claims["features"] == {"ai.generate": False, "sync": True, "offline": True}
        assert catalog.assignments[org].license_state == "grace"

        # Retries on the schedule: May 1 (+2 days), May 6 (+5), May 13 (+7) all fail;
        # on May 13 grace ends too: sync goes off, offline stays.
        await advance(client, account, 2 * DAY)
        assert moment((await subscription(client, account))["next_retry_at"]) == at(5, 6)
        await advance(client, account, 12 * DAY)
        sub = await subscription(client, account)
        assert (sub["status"], sub["license_state"]) == ("past_due", "restricted")
        assert moment(sub["next_retry_at"]) == at(5, 20)
        claims = await license_claims(client, account, clock)
        assert claims["features"] == {"ai.generate": False, "sync": False, "offline": True}

        # May 15: a working card pays the open invoice at once -> active again, and the
        # period's 5,000 tokens arrive.
        await advance(client, account, 2 * DAY)
        assert (await add_card(client, account, "4242424242424242")).status_code == 201
        await advance(client, account, 0)
        sub = await subscription(client, account)
        assert (sub["status"], sub["license_state"], sub["next_retry_at"]) == (
            "active",
            "active",
            None,
        )
        fifth = (await invoices(client, account))[4]
        assert fifth["status"] == "paid"
        assert moment(fifth["paid_at"]) == at(5, 15)
        assert ledger.grants[-1].amount == 5000
        assert ledger.grants[-1].expires_at == at(5, 29)
        claims = await license_claims(client, account, clock)
        assert claims["features"] == {"ai.generate": True, "sync": True, "offline": True}

        # Cancel at the period end: Business runs until May 29, then the org is on Free.
        canceled = await client.delete("/api/v1/billing/subscription", headers=account.headers)
        assert canceled.status_code == 200
        assert canceled.json()["cancel_at_period_end"] is True
        await advance(client, account, 14 * DAY)
        sub = await subscription(client, account)
        assert (sub["plan"], sub["status"]) == ("free", "active")
        assert moment(sub["current_period_start"]) == at(5, 29)
        assert catalog.assignments[org].plan_id == "free"

        # The rest of the year on Free: monthly 100-token allotments, no invoices.
        free_grants = len([g for g in ledger.grants if g.amount == 100])
        await advance(client, account, int((at(1, 15, 2027) - clock.now()).total_seconds()))
        assert len([g for g in ledger.grants if g.amount == 100]) == free_grants + 7
        final = await invoices(client, account)
        assert [item["number"] for item in final] == [f"TW-2026-00000{n}" for n in range(1, 6)]
        assert [item["total"] for item in final] == [3451, 3808, 5457, 11781, 11781]
        assert {item["status"] for item in final} == {"paid"}
