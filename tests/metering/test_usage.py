from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.entitlements import key_headers, override, put_on_plan
from tests.fixtures.identity import Account, create_api_key, register
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import outbox
from tollway.metering.service.counters import usage_counter_service
from tollway.metering.service.records import period_bounds


@pytest.fixture
async def account(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def headers(client: httpx.AsyncClient, account: Account) -> dict[str, str]:
    return key_headers(await create_api_key(client, account))


def event(
    key: str, meter: str = "sync_runs", quantity: int = 1, **extra: object
) -> dict[str, object]:
    return {"meter": meter, "quantity": quantity, "idempotency_key": key, **extra}


async def used(client: httpx.AsyncClient, account: Account, meter: str) -> int:
    response = await client.get("/api/v1/billing/usage", headers=account.headers)
    assert response.status_code == 200, response.text
    return next(m["used"] for m in response.json()["meters"] if m["meter"] == meter)


class TestIngestion:
    async def test_a_single_event_is_counted(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        response = await client.post(
            "/api/v1/billing/usage", json=event("a", quantity=3), headers=headers
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"accepted": 1, "duplicates": 0, "duplicate_keys": []}
        assert await used(client, account, "sync_runs") == 3

    async def test_a_duplicated_batch_counts_once(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        batch = {"events": [event(f"k{i}", quantity=2) for i in range(50)]}
        first = await client.post("/api/v1/billing/usage", json=batch, headers=headers)
        second = await client.post("/api/v1/billing/usage", json=batch, headers=headers)
        assert first.json()["accepted"] == 50
        assert second.json()["accepted"] == 0
        assert second.json()["duplicates"] == 50
        assert await used(client, account, "sync_runs") == 100

    async def test_a_key_repeated_inside_one_batch_counts_once(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        batch = {"events": [event("same"), event("same"), event("other")]}
        response = await client.post("/api/v1/billing/usage", json=batch, headers=headers)
        assert response.json() == {"accepted": 2, "duplicates": 1, "duplicate_keys": ["same"]}
        assert await used(client, account, "sync_runs") == 2

    async def test_a_key_reused_for_another_event_is_409_and_nothing_is_kept(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await client.post("/api/v1/billing/usage", json=event("k", quantity=1), headers=headers)
        batch = {"events": [event("fresh"), event("k", quantity=5)]}
        response = await client.post("/api/v1/billing/usage", json=batch, headers=headers)
        assert response.status_code == 409
        assert response.json()["code"] == "idempotency_key_reused"
        assert await used(client, account, "sync_runs") == 1

    async def test_keys_are_per_organization(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        other = await register(client)
        other_headers = key_headers(await create_api_key(client, other))
        for each in (headers, other_headers):
            response = await client.post(
                "/api/v1/billing/usage", json=event("shared"), headers=each
            )
            assert response.json()["accepted"] == 1

    async def test_a_late_event_of_the_open_period_counts_and_a_closed_period_is_refused(
        self,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        start, _end = period_bounds(clock.now(), "month")
        late = event("late", timestamp=(start + timedelta(hours=1)).isoformat())
        assert (await client.post("/api/v1/billing/usage", json=late, headers=headers)).json()[
            "accepted"
        ] == 1
        closed = event("closed", timestamp=(start - timedelta(seconds=1)).isoformat())
        response = await client.post("/api/v1/billing/usage", json=closed, headers=headers)
        assert response.status_code == 422
        assert response.json()["code"] == "period_closed"

    async def test_unique_meters_count_distinct_values_and_max_meters_keep_the_peak(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        batch = {
            "events": [
                event("t1", "templates", properties={"template_id": "rust-cli"}),
                event("t2", "templates", properties={"template_id": "rust-cli"}),
                event("t3", "templates", properties={"template_id": "go-api"}),
                event("s1", "storage_bytes", quantity=500),
                event("s2", "storage_bytes", quantity=900),
                event("s3", "storage_bytes", quantity=700),
            ]
        }
        assert (await client.post("/api/v1/billing/usage", json=batch, headers=headers)).json()[
            "accepted"
        ] == 6
        later = event("t4", "templates", properties={"template_id": "go-api"})
        await client.post("/api/v1/billing/usage", json=later, headers=headers)
        assert await used(client, account, "templates") == 2
        assert await used(client, account, "storage_bytes") == 900


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "code"),
        [
            (event("a", meter="teleports"), "unknown_meter"),
            (event("a", quantity=0), "invalid_quantity"),
            (event("a", quantity=-4), "invalid_quantity"),
            (event("a", timestamp="yesterday-ish"), "invalid_timestamp"),
            (event("a", timestamp="2026-01-15T11:00:00"), "invalid_timestamp"),
            (event("a", timestamp="2027-01-01T00:00:00Z"), "timestamp_in_future"),
            (event("a", meter="templates"), "missing_property"),
            ({"events": [event(f"k{i}") for i in range(1001)]}, "batch_too_large"),
            ({"events": []}, "invalid_quantity"),
            (event("a", quantity=2**63), "validation_error"),
            (event("a", quantity=2**63 - 1), "validation_error"),
            (event("a", quantity=True), "validation_error"),
            (event("a", quantity="5"), "validation_error"),
            ({"events": [event("a", quantity=2**63)]}, "validation_error"),
        ],
    )
    async def test_bad_events_are_422_with_a_code(
        self, client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object], code: str
    ) -> None:
        response = await client.post("/api/v1/billing/usage", json=body, headers=headers)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code

    async def test_a_single_event_without_its_key_gets_one_error_about_the_key(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        body = {"meter": "sync_runs", "quantity": 1}
        response = await client.post("/api/v1/billing/usage", json=body, headers=headers)
        assert response.status_code == 422, response.text
        errors = response.json()["errors"]
        assert [(error["loc"][-1], error["type"]) for error in errors] == [
            ("idempotency_key", "missing")
        ]

    async def test_the_failing_event_of_a_batch_is_named_by_its_index(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        batch = {"events": [event("ok"), event("bad", quantity=0)]}
        response = await client.post("/api/v1/billing/usage", json=batch, headers=headers)
        assert response.json()["index"] == 1

    async def test_a_period_counter_stops_at_its_bound_instead_of_overflowing(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await put_on_plan(app, account.organization_id, "enterprise")  # no quota on sync
        full = {"events": [event(f"k{i}", quantity=10**12) for i in range(1000)]}
        response = await client.post("/api/v1/billing/usage", json=full, headers=headers)
        assert response.status_code == 200, response.text
        one_more = await client.post("/api/v1/billing/usage", json=event("x"), headers=headers)
        assert one_more.status_code == 422, one_more.text
        assert one_more.json()["code"] == "usage_limit_exceeded"
        assert await used(client, account, "sync_runs") == 10**15
        decision = await client.post(
            "/api/v1/authorize", json={"feature": "sync", "quantity": 1}, headers=headers
        )
        assert decision.status_code == 422, decision.text
        assert decision.json()["code"] == "usage_limit_exceeded"
        assert await used(client, account, "sync_runs") == 10**15

    async def test_a_key_without_usage_write_is_403(
        self, client: httpx.AsyncClient, account: Account
    ) -> None:
        key = await create_api_key(client, account, scopes=["usage:read"])
        response = await client.post(
            "/api/v1/billing/usage", json=event("a"), headers=key_headers(key)
        )
        assert response.status_code == 403


class TestThresholds:
    async def test_80_and_100_percent_are_announced_once_per_period(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        database: Database,
        clock: ManualClock,
    ) -> None:
        # Free: 100 sync runs a month.
        for index, quantity in enumerate([70, 9, 1, 5, 15, 30]):
            response = await client.post(
                "/api/v1/billing/usage", json=event(f"e{index}", quantity=quantity), headers=headers
            )
            assert response.status_code == 200
        async with database.transaction(write=False) as session:
            events = await outbox.list_events(
                session,
                event_type="usage.threshold_reached",
                organization_id=account.organization_id,
            )
        assert [(e.payload["percent"], e.payload["used"]) for e in events] == [(80, 80), (100, 100)]
        _start, end = period_bounds(clock.now(), "month")
        clock.set(end + timedelta(hours=1))
        await client.post("/api/v1/billing/usage", json=event("next", quantity=85), headers=headers)
        async with database.transaction(write=False) as session:
            events = await outbox.list_events(
                session,
                event_type="usage.threshold_reached",
                organization_id=account.organization_id,
            )
        assert [e.payload["percent"] for e in events] == [80, 100, 80]

    async def test_unlimited_plans_announce_nothing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        database: Database,
    ) -> None:
        await put_on_plan(app, account.organization_id, "enterprise")
        await client.post(
            "/api/v1/billing/usage", json=event("big", quantity=10**9), headers=headers
        )
        async with database.transaction(write=False) as session:
            events = await outbox.list_events(session, event_type="usage.threshold_reached")
        assert events == []


class TestUsageReport:
    async def test_usage_shows_used_limit_remaining_and_percent(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await override(app, account.organization_id, {"features": {"sync": {"quota": 40}}})
        await client.post("/api/v1/billing/usage", json=event("a", quantity=10), headers=headers)
        response = await client.get("/api/v1/billing/usage", headers=account.headers)
        meters = {m["meter"]: m for m in response.json()["meters"]}
        assert meters["sync_runs"]["used"] == 10
        assert meters["sync_runs"]["limit"] == 40
        assert meters["sync_runs"]["remaining"] == 30
        assert meters["sync_runs"]["percent"] == 25.0

    async def test_usage_between_aggregates_events_for_billing(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        database: Database,
        clock: ManualClock,
    ) -> None:
        await client.post("/api/v1/billing/usage", json=event("a", quantity=4), headers=headers)
        await client.post("/api/v1/billing/usage", json=event("b", quantity=6), headers=headers)
        start, end = period_bounds(clock.now(), "month")
        async with database.transaction(write=False) as session:
            total = await usage_counter_service.usage_between(
                session,
                organization_id=account.organization_id,
                meter_id="sync_runs",
                start=start,
                end=end,
            )
        assert total == 10
