from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import ON_POSTGRES
from tests.fixtures.apps import client_from
from tests.fixtures.entitlements import key_headers, override, put_on_plan
from tests.fixtures.identity import Account, create_api_key, register
from tollway.db import Database
from tollway.entitlements.seams import AbuseVerdict, CreditsHold
from tollway.entitlements.service import EntitlementsRuntime
from tollway.kit.clock import ManualClock
from tollway.ledger.service.grants import grant_service
from tollway.plans.catalog import AbuseLimits


@pytest.fixture
async def account(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def headers(client: httpx.AsyncClient, account: Account) -> dict[str, str]:
    return key_headers(await create_api_key(client, account))


async def authorize(
    client: httpx.AsyncClient, headers: dict[str, str], **body: object
) -> httpx.Response:
    return await client.post("/api/v1/authorize", json=body, headers=headers)


async def used(client: httpx.AsyncClient, account: Account, meter: str) -> int:
    response = await client.get("/api/v1/billing/usage", headers=account.headers)
    return next(m["used"] for m in response.json()["meters"] if m["meter"] == meter)


class FakeAbuse:
    def __init__(self, verdict: AbuseVerdict) -> None:
        self.verdict = verdict
        self.calls = 0

    async def evaluate(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        subject: str | None,
        credits: int,
        now: datetime,
        limits: AbuseLimits,
    ) -> AbuseVerdict:
        self.calls += 1
        return self.verdict


class FakeCredits:
    def __init__(self, *, balance: int) -> None:
        self.balance = balance

    async def reserve(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        amount: int,
        now: datetime,
        feature: str,
        idempotency_key: str | None,
        subject: str | None,
    ) -> CreditsHold:
        if amount > self.balance:
            return CreditsHold(None, allowed=False, code="insufficient_credits")
        self.balance -= amount
        return CreditsHold(reservation_id="res_fake")

    async def find(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        idempotency_key: str,
        amount: int,
        feature: str,
        now: datetime,
    ) -> CreditsHold | None:
        return None


def runtime(app: FastAPI) -> EntitlementsRuntime:
    value: EntitlementsRuntime = app.state.entitlements
    return value


class TestAllowed:
    async def test_an_allowed_decision_records_its_usage_before_answering(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        response = await authorize(client, headers, feature="sync", quantity=2)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["allowed"] is True
        assert body["code"] is None
        assert body["reservation_id"] is None
        assert body["remaining"] == {"sync_runs": 98}
        assert body["reset_at"] == "2026-02-01T00:00:00Z"
        assert await used(client, account, "sync_runs") == 2

    async def test_a_retried_idempotency_key_counts_once(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        first = await authorize(client, headers, feature="sync", idempotency_key="job-1")
        again = await authorize(client, headers, feature="sync", idempotency_key="job-1")
        assert first.json()["allowed"]
        assert again.json()["allowed"]
        assert again.json()["duplicate"] is True
        assert await used(client, account, "sync_runs") == 1
        other = await authorize(
            client, headers, feature="sync", quantity=3, idempotency_key="job-1"
        )
        assert other.status_code == 409
        assert other.json()["code"] == "idempotency_key_reused"

    async def test_an_unlimited_plan_still_meters(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await put_on_plan(app, account.organization_id, "enterprise")
        body = (await authorize(client, headers, feature="sync", quantity=5000)).json()
        assert body["allowed"] is True
        assert body["remaining"] == {"sync_runs": None}
        assert await used(client, account, "sync_runs") == 5000

    async def test_a_soft_limit_allows_past_the_quota(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await override(
            app,
            account.organization_id,
            {"features": {"sync": {"quota": 2, "enforcement": "soft"}}},
        )
        answers = [(await authorize(client, headers, feature="sync")).json() for _ in range(3)]
        assert [a["allowed"] for a in answers] == [True, True, True]
        assert answers[-1]["remaining"] == {"sync_runs": 0}


class TestDenials:
    async def test_license_degraded_follows_each_features_policy(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        grace_ends = clock.now() + timedelta(days=14)
        await put_on_plan(
            app, account.organization_id, "pro", license_state="grace", grace_ends_at=grace_ends
        )
        ai = (await authorize(client, headers, feature="ai.generate")).json()
        assert (ai["allowed"], ai["code"]) == (False, "license_degraded")
        assert (await authorize(client, headers, feature="sync")).json()["allowed"] is True
        clock.set(grace_ends)
        sync = (await authorize(client, headers, feature="sync")).json()
        assert (sync["allowed"], sync["code"]) == (False, "license_degraded")
        await put_on_plan(app, account.organization_id, "pro", license_state="restricted")
        assert (await authorize(client, headers, feature="api")).json()["allowed"] is True

    async def test_feature_not_in_plan(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        body = (await authorize(client, headers, feature="custom_ontologies")).json()
        assert (body["allowed"], body["code"]) == (False, "feature_not_in_plan")

    async def test_rate_limited_with_retry_after_and_ratelimit_headers(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await override(
            app, account.organization_id, {"features": {"sync": {"rate_limit_per_minute": 3}}}
        )
        answers = [await authorize(client, headers, feature="sync") for _ in range(4)]
        assert [a.json()["allowed"] for a in answers] == [True, True, True, False]
        assert answers[0].headers["RateLimit-Limit"] == "3"
        assert answers[0].headers["RateLimit-Remaining"] == "2"
        assert 0 < int(answers[0].headers["RateLimit-Reset"]) <= 60
        denied = answers[3]
        assert denied.json()["code"] == "rate_limited"
        assert 1 <= int(denied.headers["Retry-After"]) <= 60
        assert denied.headers["RateLimit-Remaining"] == "0"

    @pytest.mark.parametrize("code", ["too_frequent", "request_too_large", "temporarily_blocked"])
    async def test_the_abuse_battery_denies_with_its_code(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        code: str,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        runtime(app).abuse = FakeAbuse(AbuseVerdict(allowed=False, code=code, retry_after=3))
        runtime(app).credits = FakeCredits(balance=100)
        response = await authorize(client, headers, feature="ai.generate", credits=3)
        assert (response.json()["allowed"], response.json()["code"]) == (False, code)
        assert response.headers["Retry-After"] == "3"
        assert await used(client, account, "ai_requests") == 0

    async def test_the_abuse_battery_is_not_asked_without_credits(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        abuse = FakeAbuse(AbuseVerdict(allowed=False, code="too_frequent"))
        runtime(app).abuse = abuse
        assert (await authorize(client, headers, feature="ai.generate")).json()["allowed"] is True
        assert abuse.calls == 0

    async def test_quota_exceeded_and_a_denial_uses_no_quota(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        await override(app, account.organization_id, {"features": {"sync": {"quota": 5}}})
        first = (await authorize(client, headers, feature="sync", quantity=4)).json()
        too_many = (await authorize(client, headers, feature="sync", quantity=2)).json()
        exact = (await authorize(client, headers, feature="sync", quantity=1)).json()
        assert first["allowed"] is True
        assert (too_many["allowed"], too_many["code"]) == (False, "quota_exceeded")
        assert too_many["remaining"] == {"sync_runs": 1}
        assert exact["allowed"] is True
        assert await used(client, account, "sync_runs") == 5

    async def test_insufficient_credits_takes_the_quota_back(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        runtime(app).credits = FakeCredits(balance=4)
        allowed = (await authorize(client, headers, feature="ai.generate", credits=3)).json()
        clock.advance(seconds=4)  # past the abuse battery's minimum gap
        denied = (await authorize(client, headers, feature="ai.generate", credits=3)).json()
        assert (allowed["allowed"], allowed["reservation_id"]) == (True, "res_fake")
        assert (denied["allowed"], denied["code"]) == (False, "insufficient_credits")
        assert await used(client, account, "ai_requests") == 1

    async def test_credits_are_held_in_the_ledger_and_the_abuse_battery_applies(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        database: Database = app.state.database
        async with database.transaction() as session:
            await grant_service.grant(
                session,
                organization_id=account.organization_id,
                amount=5,
                source="admin",
                now=clock.now(),
                reason="test credits",
            )
        held = (await authorize(client, headers, feature="ai.generate", credits=3)).json()
        assert held["allowed"] is True
        assert held["reservation_id"].startswith("res_")
        # The seed's minimum gap of 3 s between credit-spending requests.
        at_once = (await authorize(client, headers, feature="ai.generate", credits=1)).json()
        assert (at_once["allowed"], at_once["code"]) == (False, "too_frequent")
        too_big = (await authorize(client, headers, feature="ai.generate", credits=11)).json()
        assert (too_big["allowed"], too_big["code"]) == (False, "request_too_large")
        clock.advance(seconds=4)
        short = (await authorize(client, headers, feature="ai.generate", credits=3)).json()
        assert (short["allowed"], short["code"]) == (False, "insufficient_credits")
        balance = (await client.get("/api/v1/credits/balance", headers=account.headers)).json()
        assert (balance["balance"], balance["reserved"], balance["available"]) == (5, 3, 2)

    async def test_an_organizations_abuse_override_applies_to_authorize_too(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        await override(
            app,
            account.organization_id,
            {"abuse": {"max_credits_per_request": 40, "min_interval_seconds": 0}},
        )
        database: Database = app.state.database
        async with database.transaction() as session:
            await grant_service.grant(
                session,
                organization_id=account.organization_id,
                amount=100,
                source="admin",
                now=clock.now(),
                reason="test credits",
            )
        clock.advance(seconds=2)  # past the entitlements cache's second
        for _ in range(2):  # no minimum gap, and 40 credits at once
            held = (await authorize(client, headers, feature="ai.generate", credits=40)).json()
            assert (held["allowed"], held["code"]) == (True, None), held

    async def test_a_revoked_key_is_401_invalid_api_key(
        self, client: httpx.AsyncClient, account: Account
    ) -> None:
        key = await create_api_key(client, account)
        listed = await client.get("/api/v1/auth/keys", headers=account.headers)
        key_id = next(
            item["id"] for item in listed.json()["items"] if key.startswith(item["prefix"])
        )
        await client.post(f"/api/v1/auth/keys/{key_id}/revoke", headers=account.headers)
        response = await authorize(client, key_headers(key), feature="sync")
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_api_key"

    async def test_an_access_token_or_a_key_without_the_scope_is_refused(
        self, client: httpx.AsyncClient, account: Account
    ) -> None:
        with_token = await authorize(client, account.headers, feature="sync")
        assert with_token.status_code == 401
        assert with_token.json()["code"] == "api_key_required"
        narrow = await create_api_key(client, account, scopes=["usage:read"])
        response = await authorize(client, key_headers(narrow), feature="sync")
        assert response.status_code == 403


class TestBadInput:
    @pytest.mark.parametrize(
        ("body", "status", "code"),
        [
            ({"feature": "teleport"}, 422, "unknown_feature"),
            ({"feature": "sync", "quantity": 0}, 422, "invalid_quantity"),
            ({"feature": "sync", "quantity": -3}, 422, "invalid_quantity"),
            ({"feature": "sync", "credits": -1}, 422, "invalid_credits"),
            ({"feature": "sync", "surprise": 1}, 422, "validation_error"),
            ({"feature": "sync", "quantity": 2**63}, 422, "validation_error"),
            ({"feature": "sync", "quantity": 2**63 - 1}, 422, "validation_error"),
            ({"feature": "sync", "quantity": 10**12 + 1}, 422, "validation_error"),
            ({"feature": "sync", "quantity": True}, 422, "validation_error"),
            ({"feature": "sync", "quantity": "5"}, 422, "validation_error"),
            ({"feature": "ai.generate", "credits": 2**63}, 422, "validation_error"),
            ({"feature": "ai.generate", "credits": 2**63 - 1}, 422, "validation_error"),
            ({"feature": "ai.generate", "credits": True}, 422, "validation_error"),
            ({"feature": "ai.generate", "credits": "5"}, 422, "validation_error"),
            ({"feature": "ai.generate", "credits": 2.0}, 422, "validation_error"),
        ],
    )
    async def test_bad_requests_are_problems_with_codes(
        self,
        client: httpx.AsyncClient,
        headers: dict[str, str],
        body: dict[str, object],
        status: int,
        code: str,
    ) -> None:
        response = await client.post("/api/v1/authorize", json=body, headers=headers)
        assert response.status_code == status, response.text
        assert response.json()["code"] == code


class TestConcurrency:
    async def test_parallel_decisions_against_a_quota_allow_exactly_the_quota(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        quota, attempts = 17, 60
        await override(app, account.organization_id, {"features": {"sync": {"quota": quota}}})
        answers = await asyncio.gather(
            *(authorize(client, headers, feature="sync") for _ in range(attempts))
        )
        assert all(answer.status_code == 200 for answer in answers)
        allowed = [answer.json()["allowed"] for answer in answers]
        assert allowed.count(True) == quota
        assert {a.json()["code"] for a in answers if not a.json()["allowed"]} == {"quota_exceeded"}
        assert await used(client, account, "sync_runs") == quota

    @pytest.mark.postgres_only
    async def test_two_processes_share_one_exact_quota(
        self,
        app: FastAPI,
        app_factory: Callable[..., FastAPI],
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
    ) -> None:
        assert ON_POSTGRES
        quota, attempts = 23, 80
        await override(app, account.organization_id, {"features": {"sync": {"quota": quota}}})
        second = app_factory()
        async with LifespanManager(second):
            transport = httpx.ASGITransport(app=second)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as other:
                answers = await asyncio.gather(
                    *(
                        authorize(client if index % 2 else other, headers, feature="sync")
                        for index in range(attempts)
                    )
                )
        assert [a.json()["allowed"] for a in answers].count(True) == quota
        assert await used(client, account, "sync_runs") == quota


class TestLockOrder:
    @pytest.mark.postgres_only
    async def test_authorize_with_credits_and_releases_mixed_never_deadlock(
        self,
        app: FastAPI,
        app_factory: Callable[..., FastAPI],
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        assert ON_POSTGRES
        await put_on_plan(app, account.organization_id, "pro")
        generous = {"min_interval_seconds": 0, "requests_per_minute": 10**6, "max_failures": 10**6}
        await override(
            app,
            account.organization_id,
            {"abuse": generous, "features": {"ai.generate": {"rate_limit_per_minute": 10**6}}},
        )
        await fund(app, account.organization_id, clock, 10**6)
        clock.advance(seconds=2)  # past the entitlements cache's second
        holds = []
        for _ in range(40):
            held = (await authorize(client, headers, feature="ai.generate", credits=1)).json()
            holds.append(held["reservation_id"])
        second = app_factory()
        async with LifespanManager(second), client_from(second) as other:

            async def spend(http: httpx.AsyncClient, times: int) -> list[httpx.Response]:
                return [
                    await authorize(http, headers, feature="ai.generate", credits=1)
                    for _ in range(times)
                ]

            async def release(http: httpx.AsyncClient, ids: list[str]) -> list[httpx.Response]:
                return [
                    await http.post(
                        f"/api/v1/credits/reservations/{reservation_id}/release",
                        headers=account.headers,
                    )
                    for reservation_id in ids
                ]

            # Two processes, each spending and releasing in interleaved streams.
            streams = await asyncio.gather(
                *(spend(client if n % 2 else other, 10) for n in range(4)),
                *(release(other if n % 2 else client, holds[n::4]) for n in range(4)),
            )
        answers = [answer for stream in streams for answer in stream]
        assert [a.text for a in answers if a.status_code >= 500] == []
        decisions = [a.json() for stream in streams[:4] for a in stream]
        assert all(decision["allowed"] for decision in decisions), decisions
        balance = (await client.get("/api/v1/credits/balance", headers=account.headers)).json()
        assert balance["reserved"] == len(holds)


class TestFreshness:
    async def test_a_plan_change_made_in_this_process_is_seen_at_once(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        before = (await authorize(client, headers, feature="custom_ontologies")).json()
        assert before["code"] == "feature_not_in_plan"
        await put_on_plan(app, account.organization_id, "pro")
        assert (await authorize(client, headers, feature="custom_ontologies")).json()["allowed"]

    async def test_a_cached_entry_expires_after_one_second_of_the_clock(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
        database: Database,
    ) -> None:
        from tollway.plans.repository import PlansRepository

        assert (await authorize(client, headers, feature="custom_ontologies")).json()[
            "code"
        ] == "feature_not_in_plan"
        # Write the assignment behind the service's back, as another process would.
        async with database.transaction() as session:
            await PlansRepository(session).upsert_assignment(
                {
                    "organization_id": account.organization_id,
                    "plan_id": "pro",
                    "license_state": "active",
                    "grace_ends_at": None,
                    "catalog_version": None,
                    "updated_at": clock.now(),
                }
            )
        stale = (await authorize(client, headers, feature="custom_ontologies")).json()
        assert stale["code"] == "feature_not_in_plan"
        clock.advance(seconds=1)
        assert (await authorize(client, headers, feature="custom_ontologies")).json()["allowed"]


class TestIdempotencyUnderConcurrency:
    async def test_parallel_retries_of_one_decision_count_once(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        answers = await asyncio.gather(
            *(authorize(client, headers, feature="sync", idempotency_key="once") for _ in range(12))
        )
        bodies = [answer.json() for answer in answers]
        assert all(body["allowed"] for body in bodies)
        assert sum(not body["duplicate"] for body in bodies) == 1
        assert await used(client, account, "sync_runs") == 1


class TestUniqueMeters:
    async def test_templates_count_distinct_ones_against_the_free_limit_of_five(
        self, client: httpx.AsyncClient, account: Account, headers: dict[str, str]
    ) -> None:
        async def acquire(template: str) -> dict[str, object]:
            response = await authorize(
                client, headers, feature="templates.install", properties={"template_id": template}
            )
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body

        for template in ["a", "b", "c", "d", "e", "a", "b"]:
            assert (await acquire(template))["allowed"] is True
        sixth = await acquire("f")
        assert (sixth["allowed"], sixth["code"]) == (False, "quota_exceeded")
        again = await acquire("c")
        assert again["allowed"] is True
        assert await used(client, account, "templates") == 5
        # A lifetime meter never resets, and its quota is not one "for this period".
        assert (sixth["reset_at"], again["reset_at"]) == (None, None)
        assert sixth["detail"] == "the templates quota of 5 is used up"

    async def test_a_unique_meter_without_its_property_is_422(
        self, client: httpx.AsyncClient, headers: dict[str, str]
    ) -> None:
        response = await authorize(client, headers, feature="templates.install")
        assert response.status_code == 422
        assert response.json()["code"] == "missing_property"


class TestDecidingInsideAnotherTransaction:
    async def test_a_decision_in_the_callers_session_commits_or_rolls_back_with_it(
        self, app: FastAPI, client: httpx.AsyncClient, account: Account, database: Database
    ) -> None:
        from tollway.entitlements.service import entitlements_service

        async with database.transaction() as session:
            kept = await entitlements_service.decide(
                runtime(app),
                organization_id=account.organization_id,
                subject="marketplace",
                feature="templates.install",
                properties={"template_id": "kept"},
                session=session,
            )
        assert kept.allowed
        with pytest.raises(RuntimeError):
            async with database.transaction() as session:
                await entitlements_service.decide(
                    runtime(app),
                    organization_id=account.organization_id,
                    subject="marketplace",
                    feature="sync",
                    session=session,
                )
                raise RuntimeError("the purchase failed")
        assert await used(client, account, "templates") == 1
        assert await used(client, account, "sync_runs") == 0


async def fund(app: FastAPI, organization_id: str, clock: ManualClock, amount: int) -> None:
    database: Database = app.state.database
    async with database.transaction() as session:
        await grant_service.grant(
            session,
            organization_id=organization_id,
            amount=amount,
            source="admin",
            now=clock.now(),
            reason="test credits",
        )


class TestIdempotentCredits:
    async def test_a_retry_answers_the_same_reservation_without_a_second_hold(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        await fund(app, account.organization_id, clock, 10)
        first = (
            await authorize(client, headers, feature="ai.generate", credits=3, idempotency_key="k")
        ).json()
        # At once: a retry is no new credit-spending request, so the minimum gap is no reason.
        again = (
            await authorize(client, headers, feature="ai.generate", credits=3, idempotency_key="k")
        ).json()
        assert first["allowed"] is True
        assert (again["allowed"], again["code"]) == (True, None)
        assert again["reservation_id"] == first["reservation_id"] is not None
        assert again["duplicate"] is True
        balance = (await client.get("/api/v1/credits/balance", headers=account.headers)).json()
        assert (balance["reserved"], balance["available"]) == (3, 7)
        assert await used(client, account, "ai_requests") == 1

    async def test_the_same_key_with_other_credits_is_a_conflict(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        await fund(app, account.organization_id, clock, 10)
        await authorize(client, headers, feature="ai.generate", credits=3, idempotency_key="k")
        clock.advance(seconds=4)
        other = await authorize(
            client, headers, feature="ai.generate", credits=5, idempotency_key="k"
        )
        assert other.status_code == 409, other.text
        assert other.json()["code"] == "idempotency_key_reused"
        balance = (await client.get("/api/v1/credits/balance", headers=account.headers)).json()
        assert balance["reserved"] == 3

    async def test_a_hold_lives_as_long_as_the_configured_hold_ttl(
        self,
        app_factory: Callable[..., FastAPI],
        clock: ManualClock,
    ) -> None:
        application = app_factory(credits_hold_ttl_seconds=120)
        async with (
            LifespanManager(application),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=application), base_url="http://testserver"
            ) as http,
        ):
            owner = await register(http)
            headers = key_headers(await create_api_key(http, owner))
            await put_on_plan(application, owner.organization_id, "pro")
            await fund(application, owner.organization_id, clock, 10)
            held = (await authorize(http, headers, feature="ai.generate", credits=3)).json()
            hold = await http.get(
                f"/api/v1/credits/reservations/{held['reservation_id']}", headers=owner.headers
            )
        expires_at = datetime.fromisoformat(hold.json()["expires_at"])
        assert expires_at == clock.now() + timedelta(seconds=120)


class TestOneAbuseSubject:
    async def test_one_api_key_is_one_subject_on_authorize_and_on_reservations(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        await fund(app, account.organization_id, clock, 10)
        held = (await authorize(client, headers, feature="ai.generate", credits=1)).json()
        assert held["allowed"] is True
        reserved = await client.post(
            "/api/v1/credits/reservations", json={"amount": 1}, headers=headers
        )
        assert reserved.status_code == 429, reserved.text
        assert reserved.json()["code"] == "too_frequent"

    async def test_keys_of_one_user_share_one_subject_on_both_paths(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        await fund(app, account.organization_id, clock, 10)
        other_key = key_headers(await create_api_key(client, account))
        held = (await authorize(client, headers, feature="ai.generate", credits=1)).json()
        second = (await authorize(client, other_key, feature="ai.generate", credits=1)).json()
        assert held["allowed"] is True
        assert (second["allowed"], second["code"]) == (False, "too_frequent")

    async def test_a_denial_for_lack_of_credits_is_not_a_failure(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        account: Account,
        headers: dict[str, str],
        clock: ManualClock,
    ) -> None:
        await put_on_plan(app, account.organization_id, "pro")
        for _ in range(6):
            clock.advance(seconds=4)
            denied = (await authorize(client, headers, feature="ai.generate", credits=3)).json()
            assert (denied["allowed"], denied["code"]) == (False, "insufficient_credits")
        await fund(app, account.organization_id, clock, 10)
        clock.advance(seconds=4)
        topped_up = (await authorize(client, headers, feature="ai.generate", credits=3)).json()
        assert (topped_up["allowed"], topped_up["code"]) == (True, None)
