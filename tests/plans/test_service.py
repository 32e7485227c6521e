from __future__ import annotations

import dataclasses

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.entitlements import put_on_plan
from tests.fixtures.identity import make_platform_admin, register
from tollway.accounts.service.organizations import organization_service
from tollway.audit.service import audit_service
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.money import Money
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams
from tollway.plans.catalog import PlanPrice, catalog_digest
from tollway.plans.errors import OrganizationNotFound, UnknownPlan
from tollway.plans.service.assignments import plans_service
from tollway.plans.service.catalog import catalog_service


class TestCatalogVersions:
    async def test_an_unchanged_catalog_keeps_its_version(
        self, app: FastAPI, database: Database, clock: ManualClock
    ) -> None:
        first = catalog_service.current_version
        assert first is not None
        async with database.transaction() as session:
            again = await catalog_service.store(
                session, catalog_service.catalog, source="test", now=clock.now()
            )
        assert again == first

    async def test_a_new_price_is_a_new_version_and_the_old_price_stays(
        self, app: FastAPI, database: Database, clock: ManualClock
    ) -> None:
        original = catalog_service.catalog
        first = catalog_service.current_version
        pro = original.plans["pro"]
        repriced_pro = dataclasses.replace(
            pro, price=PlanPrice(amount_minor=19900, currency="usd", interval="month")
        )
        document = {**original.document, "plans": {**original.document["plans"]}}
        document["plans"]["pro"] = {
            **document["plans"]["pro"],
            "price": {"amount": 19900, "currency": "usd", "interval": "month"},
        }
        repriced = dataclasses.replace(
            original,
            plans={**original.plans, "pro": repriced_pro},
            document=document,
            digest=catalog_digest(document),
        )
        async with database.transaction() as session:
            second = await catalog_service.store(session, repriced, source="test", now=clock.now())
        assert first is not None
        assert second == first + 1
        async with database.transaction(write=False) as session:
            old = await catalog_service.get_plan_price(session, "pro", first)
            new = await catalog_service.get_plan_price(session, "pro", second)
        assert old.money == Money(14900, "usd")
        assert new.money == Money(19900, "usd")
        async with database.transaction(write=False) as session:
            events = await outbox.list_events(session, event_type="catalog.updated")
        assert [event.payload["version"] for event in events] == [second]

    async def test_an_unknown_version_or_plan_is_unknown_plan(
        self, app: FastAPI, database: Database
    ) -> None:
        async with database.transaction(write=False) as session:
            with pytest.raises(UnknownPlan):
                await catalog_service.get_plan_price(session, "pro", 999)
            with pytest.raises(UnknownPlan):
                await catalog_service.get_plan_price(session, "gold")


class TestPlanAssignment:
    async def test_an_organization_without_a_plan_is_on_free_and_active(
        self, app: FastAPI, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        async with database.transaction(write=False) as session:
            assignment = await plans_service.plan_of(session, account.organization_id)
        assert (assignment.plan_id, assignment.license_state) == ("free", "active")

    async def test_assigning_a_plan_is_audited_and_announced_once(
        self, app: FastAPI, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        await put_on_plan(app, account.organization_id, "pro")
        await put_on_plan(app, account.organization_id, "pro")
        async with database.transaction(write=False) as session:
            assignment = await plans_service.plan_of(session, account.organization_id)
            events = await outbox.list_events(session, event_type="organization.plan_changed")
            audit = await audit_service.list_entries(
                session, params=PageParams(), organization_id=account.organization_id
            )
        assert assignment.plan_id == "pro"
        assert len(events) == 1
        assert events[0].payload["previous_plan"] is None
        assert [entry.action for entry in audit.items].count("plan.assigned") == 1

    async def test_a_change_is_read_back_at_once_and_other_loaded_rows_stay_loaded(
        self, app: FastAPI, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        await put_on_plan(app, account.organization_id, "free")
        async with database.transaction() as session:
            before = await plans_service.plan_of(session, account.organization_id)
            organization = await organization_service.get_organization(
                session, account.organization_id
            )
            await plans_service.assign_plan(
                session, account.organization_id, "pro", license_state="grace"
            )
            after = await plans_service.plan_of(session, account.organization_id)
            # Still loaded: reading it needs no I/O (an async session could not do it).
            assert organization.name
        assert (before.plan_id, after.plan_id, after.license_state) == ("free", "pro", "grace")

    async def test_an_unknown_plan_or_organization_is_refused(
        self, app: FastAPI, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        async with database.transaction() as session:
            with pytest.raises(UnknownPlan):
                await plans_service.assign_plan(session, account.organization_id, "gold")
        async with database.transaction() as session:
            with pytest.raises(OrganizationNotFound):
                await plans_service.assign_plan(session, "org_nope", "pro")


class TestPricingEndpoint:
    async def test_pricing_lists_plans_and_token_packs_without_credentials(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/api/v1/billing/pricing")
        assert response.status_code == 200
        body = response.json()
        plans = {plan["id"]: plan for plan in body["plans"]}
        assert plans["pro"]["price"] == {"amount": 14900, "currency": "usd", "interval": "month"}
        assert plans["free"]["limits"]["api_calls"] == 1000
        assert plans["enterprise"]["limits"]["api_calls"] is None
        assert plans["pro"]["monthly_tokens"] == 200
        assert plans["pro"]["trial_days"] == 14
        assert plans["pro"]["features"]["ai.generate"]["degradation"] == "immediate"
        assert "custom_ontologies" not in plans["free"]["features"]
        packs = {pack["tokens"]: pack["price"] for pack in body["token_packs"]}
        assert packs == {
            500: {"amount": 2900, "currency": "usd"},
            2000: {"amount": 7900, "currency": "usd"},
        }


class TestAdminEndpoints:
    async def test_admins_set_plans_and_overrides_and_others_may_not(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        customer = await register(client)
        staff = await make_platform_admin(app, await register(client))
        path = f"/api/v1/admin/organizations/{customer.organization_id}"
        refused = await client.put(f"{path}/plan", json={"plan": "pro"}, headers=customer.headers)
        assert refused.status_code == 403
        assigned = await client.put(
            f"{path}/plan", json={"plan": "enterprise"}, headers=staff.headers
        )
        assert assigned.status_code == 200, assigned.text
        assert assigned.json()["plan"] == "enterprise"
        overrides = {"features": {"api": {"quota": 5}}, "rate_limit_per_minute": 100}
        put = await client.put(f"{path}/overrides", json=overrides, headers=staff.headers)
        assert put.status_code == 200, put.text
        got = await client.get(f"{path}/overrides", headers=staff.headers)
        assert got.json()["overrides"] == overrides
        entitlements = await client.get("/api/v1/entitlements", headers=customer.headers)
        assert entitlements.json()["plan"] == "enterprise"
        assert entitlements.json()["limits"]["api_calls"] == 5

    async def test_bad_overrides_and_plans_are_422_or_404(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        customer = await register(client)
        staff = await make_platform_admin(app, await register(client))
        path = f"/api/v1/admin/organizations/{customer.organization_id}"
        unknown_feature = await client.put(
            f"{path}/overrides", json={"features": {"teleport": {}}}, headers=staff.headers
        )
        assert unknown_feature.status_code == 422
        assert unknown_feature.json()["code"] == "unknown_feature"
        unknown_plan = await client.put(
            f"{path}/plan", json={"plan": "gold"}, headers=staff.headers
        )
        assert unknown_plan.status_code == 404
        assert unknown_plan.json()["code"] == "unknown_plan"
        no_org = await client.put(
            "/api/v1/admin/organizations/org_nope/plan", json={"plan": "pro"}, headers=staff.headers
        )
        assert no_org.status_code == 404
        assert no_org.json()["code"] == "organization_not_found"
        naive_grace = await client.put(
            f"{path}/plan",
            json={"plan": "pro", "license_state": "grace", "grace_ends_at": "2026-02-01T00:00:00"},
            headers=staff.headers,
        )
        assert (naive_grace.status_code, naive_grace.json()["code"]) == (422, "validation_error")
        assert naive_grace.json()["errors"][0]["type"] == "timezone_aware"
