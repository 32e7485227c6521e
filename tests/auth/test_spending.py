"""Who may spend the saved card off-session: the owner and billing roles, and keys that
were given ``billing:purchase`` explicitly (never by default)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.accounts.test_members import login_into
from tests.fixtures.identity import Account, add_member, create_api_key, register
from tests.marketplace.conftest import make_org, publish
from tollway.auth.scopes import DEFAULT_API_KEY_SCOPES, ROLE_SCOPES, SCOPES

CARD = {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


async def with_card(client: httpx.AsyncClient, account: Account) -> None:
    added = await client.post("/api/v1/billing/payment-methods", json=CARD, headers=account.headers)
    assert added.status_code == 201, added.text


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def buy_pack(client: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/api/v1/credits/packs/tokens_500/purchase", headers=headers)


class TestThePurchaseScope:
    def test_it_is_listed_and_not_given_to_new_keys_admins_or_members(self) -> None:
        assert "billing:purchase" in SCOPES
        assert "billing:purchase" not in DEFAULT_API_KEY_SCOPES
        assert {role for role, scopes in ROLE_SCOPES.items() if "billing:purchase" in scopes} == {
            "owner",
            "billing",
        }


class TestTokenPacks:
    async def test_a_key_with_the_default_scopes_cannot_buy_a_pack(
        self, client: httpx.AsyncClient
    ) -> None:
        owner = await register(client)
        await with_card(client, owner)
        key = await create_api_key(client, owner)
        refused = await buy_pack(client, bearer(key))
        assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
        assert refused.json()["required_scopes"] == ["billing:purchase"]
        balance = await client.get("/api/v1/credits/balance", headers=owner.headers)
        assert balance.json()["balance"] == 0

    async def test_a_key_given_the_purchase_scope_and_the_owner_can_buy(
        self, client: httpx.AsyncClient
    ) -> None:
        owner = await register(client)
        await with_card(client, owner)
        key = await create_api_key(client, owner, scopes=["credits:read", "billing:purchase"])
        assert (await buy_pack(client, bearer(key))).status_code == 200
        assert (await buy_pack(client, owner.headers)).status_code == 200

    @pytest.mark.parametrize(
        ("role", "allowed"), [("billing", True), ("admin", False), ("member", False)]
    )
    async def test_of_the_other_roles_only_billing_may_buy(
        self, client: httpx.AsyncClient, role: str, allowed: bool
    ) -> None:
        owner = await register(client)
        await with_card(client, owner)
        colleague = await register(client, email=f"{role}@example.com")
        await add_member(client, owner, colleague, role=role)
        colleague = await login_into(client, colleague, owner.organization_id)
        answer = await buy_pack(client, colleague.headers)
        if allowed:
            assert answer.status_code == 200, answer.text
        else:
            assert (answer.status_code, answer.json()["code"]) == (403, "insufficient_role")


class TestPaidPackages:
    async def test_a_product_key_cannot_buy_a_paid_package_but_still_gets_free_ones(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        author = await make_org(client, name="Acme Templates")
        buyer_account = await register(client, organization_name="Buyer Inc")
        await with_card(client, buyer_account)
        await publish(client, author, "paid-kit", price={"amount": 1999, "currency": "usd"})
        await publish(client, author, "free-kit")
        key = await create_api_key(client, buyer_account)
        paid = await client.post(
            "/api/v1/marketplace/packages/paid-kit/purchase", headers=bearer(key)
        )
        assert (paid.status_code, paid.json()["code"]) == (403, "insufficient_scope")
        listed = await client.get("/api/v1/marketplace/purchases", headers=buyer_account.headers)
        assert listed.json()["items"] == []
        free = await client.post(
            "/api/v1/marketplace/packages/free-kit/purchase", headers=bearer(key)
        )
        assert free.status_code == 200, free.text
