from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.billing import BillingAccount, add_card, create_organization

URL = "/api/v1/billing/payment-methods"


class TestPaymentMethods:
    async def test_the_newest_card_is_the_default_and_removing_it_promotes_the_next(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        first = (await add_card(client, account, "4242424242424242")).json()
        second = (await add_card(client, account, "5555555555554444")).json()
        assert second["brand"] == "mastercard"
        items = (await client.get(URL, headers=account.headers)).json()["items"]
        assert [(m["id"], m["is_default"]) for m in items] == [
            (second["id"], True),
            (first["id"], False),
        ]
        assert "card_number" not in items[0]
        removed = await client.delete(f"{URL}/{second['id']}", headers=account.headers)
        assert removed.status_code == 204
        items = (await client.get(URL, headers=account.headers)).json()["items"]
        assert [(m["id"], m["is_default"]) for m in items] == [(first["id"], True)]
        again = await client.delete(f"{URL}/{second['id']}", headers=account.headers)
        assert (again.status_code, again.json()["code"]) == (404, "payment_method_not_found")

    @pytest.mark.parametrize(
        ("fields", "code"),
        [
            ({"card_number": "1234"}, "invalid_card"),
            ({"card_number": "4242-4242-4242-4243"}, "invalid_card"),
            ({"exp_year": 2025, "exp_month": 12}, "invalid_card"),
            ({"cvc": "12a"}, "invalid_card"),
            ({"exp_month": 13}, "validation_error"),
        ],
    )
    async def test_invalid_card_fields_are_refused(
        self,
        client: httpx.AsyncClient,
        account: BillingAccount,
        fields: dict[str, object],
        code: str,
    ) -> None:
        body = {"card_number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
        response = await client.post(URL, json={**body, **fields}, headers=account.headers)
        assert response.status_code == 422
        assert response.json()["code"] == code
        assert (await client.get(URL, headers=account.headers)).json()["items"] == []

    async def test_another_organization_cannot_see_or_remove_a_card(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        card = (await add_card(client, account, "4242424242424242")).json()
        other = await create_organization(client, app, name="Other")
        assert (await client.get(URL, headers=other.headers)).json()["items"] == []
        response = await client.delete(f"{URL}/{card['id']}", headers=other.headers)
        assert (response.status_code, response.json()["code"]) == (404, "payment_method_not_found")
        assert (await client.delete(f"{URL}/{card['id']}")).status_code == 401


class TestSandboxOnly:
    async def test_without_card_fields_the_sandbox_answers_which_are_needed(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.post(URL, headers=account.headers)
        assert response.status_code == 422
        assert response.json()["code"] == "validation_error"
        assert response.json()["field"] == "card_number"

    async def test_the_sandbox_has_no_customer_portal(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.post("/api/v1/billing/portal-session", headers=account.headers)
        assert (response.status_code, response.json()["code"]) == (404, "not_offered_by_provider")

    async def test_the_openapi_document_describes_both_answers_of_adding_a_card(
        self, client: httpx.AsyncClient
    ) -> None:
        document = (await client.get("/api/v1/openapi.json")).json()
        answers = document["paths"][URL]["post"]["responses"]
        assert {"200", "201"} <= set(answers)
