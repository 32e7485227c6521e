"""The billing profile: who the invoices are made out to, and where tax is due."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts.test_members import login_into
from tests.billing.test_invoices import buy_pack, pdf_text
from tests.fixtures.billing import BillingAccount, add_card
from tests.fixtures.identity import add_member, register

PROFILE = "/api/v1/billing/profile"

ACME_LTD: dict[str, Any] = {
    "name": "Acme Trading Ltd",
    "country": "gb",
    "address_lines": ["1 Acme Road", "London EC1A 1AA"],
    "tax_id": "GB123456789",
}


class TestBillingProfile:
    async def test_the_owner_sets_the_profile_and_reads_it_back(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.put(PROFILE, json=ACME_LTD, headers=account.headers)
        assert response.status_code == 200, response.text
        expected = {**ACME_LTD, "country": "GB"}
        assert response.json() == expected
        again = await client.get(PROFILE, headers=account.headers)
        assert again.json() == expected

    @pytest.mark.parametrize("country", ["ZZ", "XX", "USA", "D", "1A"])
    async def test_an_unknown_country_is_refused_and_nothing_is_written(
        self, client: httpx.AsyncClient, account: BillingAccount, country: str
    ) -> None:
        response = await client.put(
            PROFILE, json={**ACME_LTD, "country": country}, headers=account.headers
        )
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_country"
        unchanged = await client.get(PROFILE, headers=account.headers)
        assert unchanged.json()["country"] == "DE"
        assert unchanged.json()["name"] is None

    async def test_a_billing_member_may_edit_and_a_plain_member_may_not_even_read(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        clerk = await register(client)
        member = await register(client)
        await add_member(client, account.user, clerk, "billing")
        await add_member(client, account.user, member, "member")
        as_clerk = await login_into(client, clerk, account.organization_id)
        as_member = await login_into(client, member, account.organization_id)
        edited = await client.put(PROFILE, json=ACME_LTD, headers=as_clerk.headers)
        assert edited.status_code == 200, edited.text
        for response in (
            await client.get(PROFILE, headers=as_member.headers),
            await client.put(PROFILE, json=ACME_LTD, headers=as_member.headers),
        ):
            assert (response.status_code, response.json()["code"]) == (403, "insufficient_role")

    async def test_invoices_are_made_out_to_the_profile_and_taxed_by_its_country(
        self, client: httpx.AsyncClient, account: BillingAccount, tmp_path: Path
    ) -> None:
        response = await client.put(PROFILE, json=ACME_LTD, headers=account.headers)
        assert response.status_code == 200, response.text
        await add_card(client, account, "4242424242424242")
        invoice = await buy_pack(client, account)
        # British VAT, 20 % included in the 10.00: net 8.33, VAT 1.67.
        assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == (1000, 167, 1000)
        assert invoice["tax_country"] == "GB"
        pdf = await client.get(
            f"/api/v1/billing/invoices/{invoice['id']}/pdf", headers=account.headers
        )
        path = tmp_path / "invoice.pdf"
        path.write_bytes(pdf.content)
        text = pdf_text(path)
        for printed in ("Acme Trading Ltd", "1 Acme Road", "London EC1A 1AA", "GB123456789"):
            assert printed in text
