"""Refunds of marketplace sales: the earning reversed in proportion, the package revoked
on a full refund, whether an operator refunds through Tollway or at the provider."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from tests.fixtures.identity import Account, make_platform_admin, register
from tests.marketplace.conftest import Org, make_org, publish
from tests.marketplace.test_purchases import (
    PRICE,
    add_card,
    buy,
    download,
    earnings,
    process_events,
)
from tollway.audit.models import AuditEntry
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.money import round_half_up
from tollway.marketplace.service.sales import reversal_shares
from tollway.payments.models import Payment
from tollway.payments.providers.signature import sign

SECRET = "test-webhook-secret-0123456789abcdef"


@pytest.fixture
async def operator(app: FastAPI, client: httpx.AsyncClient) -> Account:
    return await make_platform_admin(app, await register(client, organization_name="Platform"))


async def bought(app: FastAPI, client: httpx.AsyncClient, author: Org, buyer: Org) -> str:
    """``buyer`` owns the paid package ``pro-kit`` (19.99, 3.00 commission); its order ID."""
    exists = await client.get("/api/v1/marketplace/packages/pro-kit", headers=author.headers)
    if exists.status_code == 404:
        await publish(client, author, "pro-kit", price=PRICE)
    await add_card(client, buyer, "4242424242424242")
    order = await buy(client, buyer, "pro-kit")
    await process_events(app)
    assert (await download(client, buyer, "pro-kit")).status_code == 200
    order_id: str = order["purchase_id"]
    return order_id


async def refund(
    client: httpx.AsyncClient,
    operator: Account,
    order_id: str,
    amount: int | None = None,
    *,
    expect: int = 200,
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/admin/marketplace/orders/{order_id}/refund",
        json={} if amount is None else {"amount": amount},
        headers=operator.headers,
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


async def payment_of(database: Database, order_id: str) -> Payment:
    async with database.transaction(write=False) as session:
        statement = select(Payment).where(Payment.reference_id == order_id)
        return (await session.execute(statement)).scalar_one()


async def refunded_at_provider(
    client: httpx.AsyncClient,
    clock: ManualClock,
    payment: Payment,
    *,
    total: int,
    event_id: str,
) -> None:
    """The provider's signed ``charge.refunded`` (a refund made in its dashboard)."""
    body = json.dumps(
        {
            "id": event_id,
            "object": "event",
            "type": "charge.refunded",
            "created": int(clock.now().timestamp()),
            "data": {
                "object": {
                    "id": f"ch_{payment.id}",
                    "object": "charge",
                    "payment_intent": payment.provider_ref,
                    "amount": payment.amount_minor,
                    "amount_refunded": total,
                    "currency": payment.currency,
                    "refunded": total >= payment.amount_minor,
                }
            },
        }
    ).encode()
    response = await client.post(
        "/api/v1/webhooks/sandbox",
        content=body,
        headers={
            "Stripe-Signature": sign([SECRET], int(clock.now().timestamp()), body),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.text


async def purchase_required(client: httpx.AsyncClient, buyer: Org) -> bool:
    response = await client.post(
        "/api/v1/marketplace/resolve",
        json={"requirements": [{"name": "pro-kit", "spec": "*"}]},
        headers=buyer.headers,
    )
    assert response.status_code == 200, response.text
    [item] = response.json()["packages"]
    required: bool = item["purchase_required"]
    return required


def sale(view: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    [item] = view["items"]
    return (
        item["gross"],
        item["commission"],
        item["net"],
        item["refunded"],
        item["commission_reversed"],
        item["net_reversed"],
    )


async def purchase_status(client: httpx.AsyncClient, buyer: Org) -> list[tuple[str, int]]:
    response = await client.get("/api/v1/marketplace/purchases", headers=buyer.headers)
    return [(item["status"], item["refunded"]) for item in response.json()["items"]]


class TestOperatorRefunds:
    async def test_a_full_refund_revokes_the_download_and_reverses_the_earning_exactly(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        database: Database,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        answer = await refund(client, operator, order_id)
        assert (answer["status"], answer["refunded"]) == ("refunded", 1999)
        assert answer["refunded_at"] is not None
        response = await download(client, buyer, "pro-kit")
        assert (response.status_code, response.json()["code"]) == (402, "purchase_required")
        view = await earnings(client, author)
        assert sale(view) == (1999, 300, 1699, 1999, 300, 1699)
        assert view["totals"] == [
            {
                "currency": "usd",
                "sales": 1,
                "gross": 1999,
                "commission": 300,
                "net": 1699,
                "refunded": 1999,
                "commission_reversed": 300,
                "net_reversed": 1699,
            }
        ]
        # The provider's charge.refunded for this refund arrives: nothing more happens.
        assert await process_events(app) > 0
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1999, 300, 1699)
        assert (await payment_of(database, order_id)).refunded_minor == 1999
        async with database.transaction(write=False) as session:
            actions = set(
                (
                    await session.execute(
                        select(AuditEntry.action).where(AuditEntry.target == order_id)
                    )
                ).scalars()
            )
        assert {"marketplace_order.refunded", "marketplace_purchase.revoked"} <= actions

    async def test_two_partial_refunds_reverse_their_shares_and_sum_to_the_sale(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        first = await refund(client, operator, order_id, 1000)
        assert (first["status"], first["refunded"]) == ("completed", 1000)
        # 3.00 x 10.00 / 19.99 = 1.5008 -> 1.50 commission; the author gives back 8.50.
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1000, 150, 850)
        assert (await download(client, buyer, "pro-kit")).status_code == 200
        await process_events(app)
        rest = await refund(client, operator, order_id)  # all that is left: 9.99
        assert (rest["status"], rest["refunded"]) == ("refunded", 1999)
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1999, 300, 1699)
        assert (await download(client, buyer, "pro-kit")).status_code == 402
        await process_events(app)
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1999, 300, 1699)

    async def test_a_refunded_package_asks_for_a_purchase_again_in_resolution(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        assert await purchase_required(client, buyer) is False
        await refund(client, operator, order_id, 500)
        assert await purchase_required(client, buyer) is False
        await refund(client, operator, order_id)
        assert await purchase_required(client, buyer) is True

    async def test_a_refunded_acquisition_keeps_its_templates_slot(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        for index in range(5):
            await publish(client, author, f"tpl-{index}")
        for index in range(4):
            await buy(client, buyer, f"tpl-{index}")  # with pro-kit: the Free plan's 5
        await refund(client, operator, order_id)
        refused = await buy(client, buyer, "tpl-4", expect=402)
        assert refused["code"] == "quota_exceeded"
        # Buying the refunded package again is not counted a second time.
        await buy(client, buyer, "pro-kit")
        await process_events(app)
        assert (await download(client, buyer, "pro-kit")).status_code == 200

    async def test_a_refunded_buyer_can_buy_the_package_again(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        first = await bought(app, client, author, buyer)
        await refund(client, operator, first)
        again = await buy(client, buyer, "pro-kit")
        assert again["purchase_id"] != first
        await process_events(app)
        assert (await download(client, buyer, "pro-kit")).status_code == 200
        assert (await earnings(client, author))["totals"][0]["sales"] == 2

    async def test_bad_refund_requests_are_refused_and_change_nothing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        for amount in (0, -5, 2000):
            refused = await refund(client, operator, order_id, amount, expect=422)
            assert (refused["code"], refused["refundable"]) == ("refund_exceeds_paid", 1999)
        await refund(client, operator, order_id, 1999)
        over = await refund(client, operator, order_id, 1, expect=422)
        assert (over["code"], over["refundable"]) == ("refund_exceeds_paid", 0)
        missing = await refund(client, operator, "mpp_nothing", expect=404)
        assert missing["code"] == "order_not_found"
        await publish(client, author, "free-kit")
        free = await buy(client, buyer, "free-kit")
        assert (await refund(client, operator, free["purchase_id"], expect=409))[
            "code"
        ] == "order_not_paid"
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1999, 300, 1699)

    async def test_an_unpaid_order_cannot_be_refunded(
        self,
        client: httpx.AsyncClient,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        await publish(client, author, "pro-kit", price=PRICE)
        await add_card(client, buyer, "4242424242424242")
        pending = await buy(client, buyer, "pro-kit")  # the success event not applied yet
        refused = await refund(client, operator, pending["purchase_id"], expect=409)
        assert refused["code"] == "order_not_paid"

    async def test_only_platform_admins_refund(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        response = await client.post(
            f"/api/v1/admin/marketplace/orders/{order_id}/refund",
            json={},
            headers=author.account.headers,
        )
        assert response.status_code == 403
        assert (await download(client, buyer, "pro-kit")).status_code == 200


class TestRefundsAtTheProvider:
    async def test_a_refund_made_at_the_provider_has_the_same_effect_as_the_admin_endpoint(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        other = await make_org(client, name="Other Buyer")
        through_tollway = await bought(app, client, author, buyer)
        at_provider = await bought(app, client, author, other)
        await refund(client, operator, through_tollway)
        payment = await payment_of(database, at_provider)
        await refunded_at_provider(client, clock, payment, total=1999, event_id="evt_dash_1")
        await process_events(app)
        items = {item["purchase_id"]: item for item in (await earnings(client, author))["items"]}
        figures = [
            (item["refunded"], item["commission_reversed"], item["net_reversed"])
            for item in (items[through_tollway], items[at_provider])
        ]
        assert figures == [(1999, 300, 1699), (1999, 300, 1699)]
        assert await purchase_status(client, buyer) == [("refunded", 1999)]
        assert await purchase_status(client, other) == [("refunded", 1999)]
        assert (await download(client, buyer, "pro-kit")).status_code == 402
        assert (await download(client, other, "pro-kit")).status_code == 402

    async def test_a_repeated_charge_refunded_event_changes_nothing_the_second_time(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        author: Org,
        buyer: Org,
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        payment = await payment_of(database, order_id)
        await refunded_at_provider(client, clock, payment, total=1000, event_id="evt_r1")
        await process_events(app)
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1000, 150, 850)
        # The same event again, the same total under another event ID, and an older,
        # smaller total arriving late: none of them reverses anything more.
        await refunded_at_provider(client, clock, payment, total=1000, event_id="evt_r1")
        await refunded_at_provider(client, clock, payment, total=1000, event_id="evt_r1_again")
        await refunded_at_provider(client, clock, payment, total=400, event_id="evt_r0")
        await process_events(app)
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1000, 150, 850)
        assert await purchase_status(client, buyer) == [("completed", 1000)]
        assert (await download(client, buyer, "pro-kit")).status_code == 200
        assert (await payment_of(database, order_id)).refunded_minor == 1000

    async def test_a_partial_refund_at_the_provider_then_the_rest_by_the_operator(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        database: Database,
        author: Org,
        buyer: Org,
        operator: Account,
    ) -> None:
        order_id = await bought(app, client, author, buyer)
        payment = await payment_of(database, order_id)
        await refunded_at_provider(client, clock, payment, total=999, event_id="evt_part")
        await process_events(app)
        rest = await refund(client, operator, order_id)
        assert (rest["status"], rest["refunded"]) == ("refunded", 1999)
        await process_events(app)
        assert sale(await earnings(client, author)) == (1999, 300, 1699, 1999, 300, 1699)


class TestReversalArithmetic:
    @pytest.mark.parametrize(
        ("gross", "commission", "refunds"),
        [
            (1999, 300, [1000, 999]),
            (1999, 300, [1, 1, 1, 1996]),
            (100, 15, [33, 33, 34]),
            (7, 1, [3, 4]),
            (999_999, 150_000, [333_333, 333_333, 333_333]),
        ],
    )
    def test_successive_refunds_split_each_amount_and_add_up_to_the_sale(
        self, gross: int, commission: int, refunds: list[int]
    ) -> None:
        total = commission_total = net_total = 0
        for amount in refunds:
            fee, net = reversal_shares(
                gross=gross,
                commission=commission,
                refunded_before=total,
                refunded_after=total + amount,
            )
            assert fee + net == amount
            assert min(fee, net) >= 0
            total += amount
            commission_total += fee
            net_total += net
        assert (commission_total, net_total) == (commission, gross - commission)

    @given(
        gross=st.integers(min_value=1, max_value=10_000_000),
        data=st.data(),
    )
    def test_the_commission_reversed_is_rounded_half_up_on_the_running_total(
        self, gross: int, data: st.DataObject
    ) -> None:
        commission = data.draw(st.integers(min_value=0, max_value=gross))
        after = data.draw(st.integers(min_value=0, max_value=gross))
        before = data.draw(st.integers(min_value=0, max_value=after))
        fee, net = reversal_shares(
            gross=gross, commission=commission, refunded_before=before, refunded_after=after
        )
        assert fee == round_half_up(commission * after, gross) - round_half_up(
            commission * before, gross
        )
        assert fee + net == after - before
