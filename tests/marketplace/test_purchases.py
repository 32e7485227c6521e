"""Purchases: free at once, paid through payments (card or checkout), earnings, limits."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from urllib.parse import urlsplit

import httpx
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.identity import create_api_key
from tests.marketplace.conftest import Org, publish
from tollway.kit.sweeps import SweepContext
from tollway.marketplace.service.sales import sale_shares
from tollway.payments.tasks import process_webhook_events

PRICE = {"amount": 1999, "currency": "usd"}


async def process_events(app: FastAPI) -> int:
    """The worker's turn: apply the provider events the sandbox sent."""
    context = SweepContext(
        database=app.state.database, clock=app.state.clock, settings=app.state.settings
    )
    return await process_webhook_events(context)


async def add_card(client: httpx.AsyncClient, org: Org, number: str) -> None:
    response = await client.post(
        "/api/v1/billing/payment-methods",
        json={"card_number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        headers=org.account.headers,
    )
    assert response.status_code == 201, response.text


async def buy(client: httpx.AsyncClient, org: Org, name: str, expect: int = 200) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/marketplace/packages/{name}/purchase", headers=org.headers
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


async def download(
    client: httpx.AsyncClient, org: Org, name: str, version: str = "1.0.0"
) -> httpx.Response:
    return await client.get(
        f"/api/v1/marketplace/packages/{name}/{version}/download", headers=org.headers
    )


async def earnings(client: httpx.AsyncClient, org: Org) -> dict[str, Any]:
    response = await client.get("/api/v1/marketplace/earnings", headers=org.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


class TestFreePackages:
    async def test_a_free_package_is_granted_at_once_and_downloads(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "free-kit")
        assert (await download(client, buyer, "free-kit")).json()["code"] == "purchase_required"
        bought = await buy(client, buyer, "free-kit")
        assert (bought["status"], bought["price"], bought["checkout_url"]) == (
            "completed",
            None,
            None,
        )
        assert (await download(client, buyer, "free-kit")).status_code == 200
        again = await buy(client, buyer, "free-kit")
        assert again["purchase_id"] == bought["purchase_id"]
        listed = (await client.get("/api/v1/marketplace/purchases", headers=buyer.headers)).json()
        assert [item["purchase_id"] for item in listed["items"]] == [bought["purchase_id"]]
        assert (await earnings(client, author))["totals"] == []

    async def test_the_author_needs_no_purchase(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "mine", price=PRICE)
        assert (await download(client, author, "mine")).status_code == 200
        assert (await buy(client, author, "mine", expect=409))["code"] == "own_package"

    async def test_the_plans_templates_limit_caps_acquisitions(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        for index in range(6):
            await publish(client, author, f"tpl-{index}")
        for index in range(5):
            await buy(client, buyer, f"tpl-{index}")
        await buy(client, buyer, "tpl-0")  # owned already: not counted again
        refused = await buy(client, buyer, "tpl-5", expect=402)
        assert refused["code"] == "quota_exceeded"
        assert (await download(client, buyer, "tpl-5")).status_code == 402


class TestDependencies:
    async def publish_kit(self, client: httpx.AsyncClient, author: Org, **package: Any) -> None:
        """A kit needing six free packages (two levels deep), like the demo's flagship."""
        for index in range(5):
            await publish(client, author, f"lib-{index}")
        await publish(
            client,
            author,
            "base",
            dependencies=[{"name": f"lib-{index}", "spec": "^1"} for index in range(5)],
        )
        await publish(
            client, author, "kit", dependencies=[{"name": "base", "spec": "^1"}], **package
        )

    async def test_free_dependencies_come_with_the_purchase_and_count_as_nothing(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await self.publish_kit(client, author)
        assert (await buy(client, buyer, "kit"))["status"] == "completed"
        for name in ["kit", "base", *(f"lib-{index}" for index in range(5))]:
            assert (await download(client, buyer, name)).status_code == 200, name
        # One template chosen of the Free plan's five: four more can be acquired.
        for index in range(4):
            await publish(client, author, f"tpl-{index}")
            await buy(client, buyer, f"tpl-{index}")
        await publish(client, author, "tpl-4")
        assert (await buy(client, buyer, "tpl-4", expect=402))["code"] == "quota_exceeded"

    async def test_a_free_customer_buys_a_paid_kit_with_seven_packages(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await self.publish_kit(client, author, price=PRICE)
        await add_card(client, buyer, "4242424242424242")
        assert (await buy(client, buyer, "kit"))["status"] == "pending"
        assert (await download(client, buyer, "lib-0")).status_code == 402  # not yet paid
        assert await process_events(app) > 0
        for name in ["kit", "base", *(f"lib-{index}" for index in range(5))]:
            assert (await download(client, buyer, name)).status_code == 200, name


class TestPaidPackages:
    async def test_a_card_payment_grants_the_package_when_it_succeeds(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "pro-kit", price=PRICE)
        await add_card(client, buyer, "4242424242424242")
        bought = await buy(client, buyer, "pro-kit")
        assert (bought["status"], bought["price"]) == ("pending", PRICE)
        # Not before the payment's success arrives through the webhook path.
        assert (await download(client, buyer, "pro-kit")).status_code == 402
        assert await process_events(app) > 0
        [purchase] = (
            await client.get("/api/v1/marketplace/purchases", headers=buyer.headers)
        ).json()["items"]
        assert purchase["status"] == "completed"
        response = await download(client, buyer, "pro-kit")
        assert response.status_code == 200
        assert response.content == b"pro-kit@1.0.0 archive"

    async def test_each_sale_books_the_authors_earning_and_the_commission(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "pro-kit", price=PRICE)
        await add_card(client, buyer, "4242424242424242")
        await buy(client, buyer, "pro-kit")
        await process_events(app)
        await process_events(app)  # applying the events again books nothing twice
        view = await earnings(client, author)
        # 15 % of 19.99 is 2.9985, rounded half up to 3.00; the author keeps 16.99.
        assert view["totals"] == [
            {
                "currency": "usd",
                "sales": 1,
                "gross": 1999,
                "commission": 300,
                "net": 1699,
                "refunded": 0,
                "commission_reversed": 0,
                "net_reversed": 0,
            }
        ]
        [sale] = view["items"]
        assert (sale["gross"], sale["commission"], sale["net"], sale["commission_percent"]) == (
            1999,
            300,
            1699,
            "15",
        )
        assert (await earnings(client, buyer))["totals"] == []

    async def test_a_declined_card_grants_nothing_and_a_retry_can_succeed(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "pro-kit", price=PRICE)
        await add_card(client, buyer, "4000000000000341")  # attaches, charges fail
        first = await buy(client, buyer, "pro-kit")
        await process_events(app)
        purchases = (
            await client.get("/api/v1/marketplace/purchases", headers=buyer.headers)
        ).json()["items"]
        assert [p["status"] for p in purchases] == ["failed"]
        assert (await download(client, buyer, "pro-kit")).json()["code"] == "purchase_required"
        assert (await earnings(client, author))["totals"] == []

        await add_card(client, buyer, "4242424242424242")
        second = await buy(client, buyer, "pro-kit")
        assert second["purchase_id"] != first["purchase_id"]
        await process_events(app)
        assert (await download(client, buyer, "pro-kit")).status_code == 200
        assert (await earnings(client, author))["totals"][0]["sales"] == 1

    async def test_without_a_card_the_answer_is_a_checkout_page(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "pro-kit", price=PRICE)
        bought = await buy(client, buyer, "pro-kit")
        assert bought["status"] == "pending"
        assert bought["checkout_url"]
        assert (await buy(client, buyer, "pro-kit"))["purchase_id"] == bought["purchase_id"]
        paid = await client.post(
            urlsplit(bought["checkout_url"]).path + "/pay",
            data={
                "card_number": "4242424242424242",
                "exp_month": "12",
                "exp_year": "2030",
                "cvc": "123",
            },
        )
        assert paid.status_code == 200, paid.text
        await process_events(app)
        assert (await download(client, buyer, "pro-kit")).status_code == 200
        assert (await earnings(client, author))["totals"][0]["net"] == 1699

    async def test_another_organization_cannot_download_an_unpaid_package(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "pro-kit", price=PRICE)
        await buy(client, buyer, "pro-kit")  # a checkout nobody paid
        response = await download(client, buyer, "pro-kit")
        assert response.status_code == 402
        body = response.json()
        assert body["code"] == "purchase_required"
        assert body["purchase_url"].endswith("/purchase")
        assert response.content != b"pro-kit@1.0.0 archive"

    async def test_purchasing_needs_the_purchase_scope_and_a_known_package(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "free-kit")
        key = await create_api_key(client, buyer.account, scopes=["marketplace:read"])
        refused = await client.post(
            "/api/v1/marketplace/packages/free-kit/purchase",
            headers={"Authorization": f"Bearer {key}"},
        )
        assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
        assert (await buy(client, buyer, "ghost", expect=404))["code"] == "package_not_found"


class TestSaleArithmetic:
    @given(
        gross=st.integers(min_value=0, max_value=100_000_000),
        percent=st.decimals(min_value=0, max_value=100, places=3),
    )
    def test_the_commission_is_rounded_half_up_and_the_author_gets_the_rest(
        self, gross: int, percent: Decimal
    ) -> None:
        commission, net = sale_shares(gross, commission_percent=percent)
        exact = Decimal(gross) * percent / Decimal(100)
        assert commission == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
        assert commission + net == gross
        assert min(commission, net) >= 0

    def test_a_sale_of_19_99_at_15_percent_books_3_00_and_16_99(self) -> None:
        assert sale_shares(1999, commission_percent=Decimal(15)) == (300, 1699)
        assert sale_shares(10, commission_percent=Decimal(15)) == (2, 8)
