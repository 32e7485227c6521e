from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from tests.fixtures.billing import (
    BillingAccount,
    MemoryCredits,
    add_card,
    advance,
    create_organization,
)
from tollway.db import Database
from tollway.kit.clock import ManualClock

DAY = 86_400


def pdf_text(path: Path) -> str:
    """The text poppler's pdftotext reads from the file (fails if the PDF does not open)."""
    return subprocess.run(  # noqa: S603 - fixed program, our own temporary file
        ["pdftotext", "-layout", str(path), "-"],  # noqa: S607 - poppler-utils is on PATH
        check=True,
        capture_output=True,
        text=True,
    ).stdout


async def buy_pack(client: httpx.AsyncClient, account: BillingAccount) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/credits/packs/pack_1000/purchase", headers=account.headers
    )
    assert response.status_code == 200, response.text
    await advance(client, account, 0)
    body: dict[str, Any] = (
        await client.get(
            f"/api/v1/billing/invoices/{response.json()['invoice_id']}", headers=account.headers
        )
    ).json()
    return body


class TestInvoicePdf:
    async def test_the_pdf_opens_and_shows_number_parties_and_total(
        self, client: httpx.AsyncClient, account: BillingAccount, tmp_path: Path
    ) -> None:
        await add_card(client, account, "4242424242424242")
        invoice = await buy_pack(client, account)
        response = await client.get(
            f"/api/v1/billing/invoices/{invoice['id']}/pdf", headers=account.headers
        )
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/pdf"
        assert response.content.startswith(b"%PDF")
        path = tmp_path / "invoice.pdf"
        path.write_bytes(response.content)
        text = pdf_text(path)
        assert invoice["number"] in text
        assert "11.90 USD" in text  # 10.00 + 19 % VAT
        assert "Acme GmbH" in text
        assert "Tollway operator" in text
        assert "VAT (19 %)" in text


class TestTaxAndNumbers:
    async def test_inclusive_tax_is_contained_in_the_price(
        self, app: FastAPI, client: httpx.AsyncClient, database: Database, account: BillingAccount
    ) -> None:
        british = await create_organization(client, app, name="Acme Ltd", country="GB")
        await add_card(client, british, "4242424242424242")
        invoice = await buy_pack(client, british)
        # 10.00 including 20 % VAT: net 8.33, VAT 1.67
        assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (1000, 167, 1000)
        assert invoice["tax_inclusive"] is True

    async def test_numbers_are_gapless_and_restart_each_year(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        database: Database,
        account: BillingAccount,
        clock: ManualClock,
    ) -> None:
        other = await create_organization(client, app, name="Other", country=None)
        await add_card(client, account, "4242424242424242")
        await add_card(client, other, "4242424242424242")
        numbers = [(await buy_pack(client, account))["number"]]
        numbers.append((await buy_pack(client, other))["number"])
        untaxed = await buy_pack(client, other)
        numbers.append(untaxed["number"])
        assert (untaxed["tax"], untaxed["total"]) == (0, 1000)
        assert numbers == ["TW-2026-000001", "TW-2026-000002", "TW-2026-000003"]
        await advance(client, account, 365 * DAY)
        assert (await buy_pack(client, account))["number"] == "TW-2027-000001"

    async def test_another_organizations_invoice_is_not_found(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        await add_card(client, account, "4242424242424242")
        invoice = await buy_pack(client, account)
        other = await create_organization(client, app, name="Other")
        for path in ("", "/pdf"):
            response = await client.get(
                f"/api/v1/billing/invoices/{invoice['id']}{path}", headers=other.headers
            )
            assert (response.status_code, response.json()["code"]) == (404, "invoice_not_found")


class TestRefunds:
    async def test_refunds_issue_credit_notes_and_take_back_unspent_credits_in_proportion(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        ledger: MemoryCredits,
    ) -> None:
        await add_card(client, account, "4242424242424242")
        invoice = await buy_pack(client, account)
        assert invoice["status"] == "paid"
        [purchase] = [g for g in ledger.grants if g.source == "purchase"]
        ledger.spent[purchase.reference] = 300  # 700 of the 1,000 tokens are left
        url = f"/api/v1/admin/invoices/{invoice['id']}/refund"
        not_admin = await client.post(url, json={"amount": 595}, headers=account.headers)
        assert not_admin.status_code == 403
        half = await client.post(url, json={"amount": 595}, headers=account.admin_headers)
        assert half.status_code == 201, half.text
        note = half.json()
        assert (note["number"], note["amount"]) == ("CN-2026-000001", 595)
        # Half the paid 11.90: floor(1000 x 595 / 1190) = 500 credits taken back.
        assert note["credits_reversed"] == 500
        too_much = await client.post(url, json={"amount": 596}, headers=account.admin_headers)
        assert (too_much.status_code, too_much.json()["code"]) == (422, "refund_exceeds_paid")
        assert too_much.json()["refundable"] == 595
        rest = await client.post(url, json={}, headers=account.admin_headers)
        assert (rest.json()["number"], rest.json()["amount"]) == ("CN-2026-000002", 595)
        assert rest.json()["credits_reversed"] == 200  # fully refunded: all still unspent
        await advance(client, account, 0)  # the provider's charge.refunded events
        detail = (
            await client.get(f"/api/v1/billing/invoices/{invoice['id']}", headers=account.headers)
        ).json()
        assert detail["amount_refunded"] == 1190
        assert [n["number"] for n in detail["credit_notes"]] == ["CN-2026-000001", "CN-2026-000002"]
        nothing_left = await client.post(url, json={"amount": 1}, headers=account.admin_headers)
        assert nothing_left.json()["code"] == "refund_exceeds_paid"

    async def test_an_open_invoice_cannot_be_refunded(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.post(
            "/api/v1/credits/packs/pack_1000/purchase", headers=account.headers
        )
        invoice_id = response.json()["invoice_id"]
        refused = await client.post(
            f"/api/v1/admin/invoices/{invoice_id}/refund", json={}, headers=account.admin_headers
        )
        assert (refused.status_code, refused.json()["code"]) == (409, "invoice_not_paid")
