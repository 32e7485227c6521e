"""Refunding a token pack takes back its credits in proportion, through the real ledger.

The shipped catalog's ``tokens_500`` pack: 500 credits for 29.00 USD; Germany's VAT is
inclusive, so the invoice's total (and what is paid) is 2,900.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.billing import BillingAccount, add_card, advance
from tollway.billing import ports

RESERVATIONS = "/api/v1/credits/reservations"


@pytest.fixture
async def pack_invoice(client: httpx.AsyncClient, account: BillingAccount) -> str:
    """The paid invoice of a ``tokens_500`` pack, bought with the installed catalog and ledger."""
    ports.use_catalog(None)
    ports.use_credits(None)
    await add_card(client, account, "4242424242424242")
    bought = await client.post("/api/v1/credits/packs/tokens_500/purchase", headers=account.headers)
    assert bought.status_code == 200, bought.text
    await advance(client, account, 0)
    invoice_id: str = bought.json()["invoice_id"]
    invoice = await client.get(f"/api/v1/billing/invoices/{invoice_id}", headers=account.headers)
    assert (invoice.json()["status"], invoice.json()["amount_paid"]) == ("paid", 2900)
    # One large spend in a single request: the organization's abuse limits allow it.
    allowed = await client.put(
        f"/api/v1/admin/organizations/{account.organization_id}/overrides",
        json={"abuse": {"max_credits_per_request": 500}},
        headers=account.admin_headers,
    )
    assert allowed.status_code == 200, allowed.text
    return invoice_id


async def spend(client: httpx.AsyncClient, account: BillingAccount, amount: int) -> None:
    held = await client.post(RESERVATIONS, json={"amount": amount}, headers=account.headers)
    assert held.status_code == 201, held.text
    committed = await client.post(
        f"{RESERVATIONS}/{held.json()['id']}/commit", headers=account.headers
    )
    assert committed.status_code == 200, committed.text


async def refund(
    client: httpx.AsyncClient, account: BillingAccount, invoice_id: str, amount: int | None
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/admin/invoices/{invoice_id}/refund",
        json={} if amount is None else {"amount": amount},
        headers=account.admin_headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def balance(client: httpx.AsyncClient, account: BillingAccount) -> int:
    response = await client.get("/api/v1/credits/balance", headers=account.headers)
    assert response.status_code == 200, response.text
    value: int = response.json()["balance"]
    return value


async def reversals(client: httpx.AsyncClient, account: BillingAccount) -> list[int]:
    page = await client.get("/api/v1/credits/ledger?limit=100", headers=account.headers)
    return sorted(
        entry["amount"]
        for entry in page.json()["items"]
        if entry["kind"] == "reverse" and entry["account"] == "refunds"
    )


class TestPartialRefundsOfATokenPack:
    async def test_each_partial_refund_takes_back_its_own_share_of_the_credits(
        self, client: httpx.AsyncClient, account: BillingAccount, pack_invoice: str
    ) -> None:
        await spend(client, account, 100)
        assert await balance(client, account) == 400
        # 10.00 of 29.00 refunded: floor(500 x 1000 / 2900) = floor(172.41) = 172 credits.
        first = await refund(client, account, pack_invoice, 1000)
        assert first["credits_reversed"] == 172
        assert await balance(client, account) == 228
        # 20.00 of 29.00 refunded in all: floor(500 x 2000 / 2900) = 344, less the 172.
        second = await refund(client, account, pack_invoice, 1000)
        assert second["credits_reversed"] == 172
        assert await balance(client, account) == 56
        # The rest (9.00) completes the refund: whatever is still unspent goes back.
        last = await refund(client, account, pack_invoice, None)
        assert (last["amount"], last["credits_reversed"]) == (900, 56)
        assert await balance(client, account) == 0
        assert await reversals(client, account) == [56, 172, 172]

    async def test_a_partial_refund_takes_back_no_more_than_is_unspent(
        self, client: httpx.AsyncClient, account: BillingAccount, pack_invoice: str
    ) -> None:
        await spend(client, account, 400)
        # Half of 29.00: a share of floor(500 x 1450 / 2900) = 250, but only 100 are left.
        half = await refund(client, account, pack_invoice, 1450)
        assert half["credits_reversed"] == 100
        assert await balance(client, account) == 0
        rest = await refund(client, account, pack_invoice, None)
        assert rest["credits_reversed"] == 0
        assert await reversals(client, account) == [100]
