"""Dependency resolution: choices, conflicts with causes, cycles, yanked versions, limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.marketplace.conftest import Org, act, create_package, publish, upload


async def resolve(
    client: httpx.AsyncClient,
    requirements: list[dict[str, str]],
    *,
    org: Org | None = None,
    expect: int = 200,
) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/marketplace/resolve",
        json={"requirements": requirements},
        headers=org.headers if org else None,
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def chosen(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(item["name"], item["version"]) for item in body["packages"]]


class TestResolving:
    async def test_the_newest_matching_versions_come_dependencies_first(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "c", "1.0.0")
        await upload(client, author, "c", "1.5.0", publish=True)
        await upload(client, author, "c", "2.0.0", publish=True)
        await upload(client, author, "c", "2.1.0-rc.1", publish=True)
        await publish(client, author, "b", "1.0.0", dependencies=[{"name": "c", "spec": "<2"}])
        await publish(client, author, "a", "1.0.0", dependencies=[{"name": "b", "spec": "^1"}])
        await upload(client, author, "a", "1.1.0")  # a draft is never chosen
        body = await resolve(client, [{"name": "a", "spec": ">=1"}])
        assert chosen(body) == [("c", "1.5.0"), ("b", "1.0.0"), ("a", "1.0.0")]
        view = (await client.get("/api/v1/marketplace/packages/c")).json()
        c15 = next(v for v in view["versions"] if v["version"] == "1.5.0")
        assert body["packages"][0]["sha256"] == c15["sha256"]
        assert body["packages"][0]["signature"] == c15["signature"]
        assert chosen(await resolve(client, [{"name": "c", "spec": "*"}])) == [("c", "2.0.0")]
        assert chosen(await resolve(client, [{"name": "c", "spec": "2.1.0-rc.1"}])) == [
            ("c", "2.1.0-rc.1")
        ]

    async def test_an_older_version_is_chosen_when_a_later_requirement_needs_it(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "b", "1.0.0")
        await upload(client, author, "b", "2.0.0", publish=True)
        await publish(client, author, "c", "1.0.0", dependencies=[{"name": "b", "spec": "<2"}])
        await publish(
            client,
            author,
            "a",
            "1.0.0",
            dependencies=[{"name": "b", "spec": ">=1"}, {"name": "c", "spec": "*"}],
        )
        # Newest-first would take b 2.0.0 for a, then c forbids it: backtrack to 1.0.0.
        assert chosen(await resolve(client, [{"name": "a"}])) == [
            ("b", "1.0.0"),
            ("c", "1.0.0"),
            ("a", "1.0.0"),
        ]

    async def test_a_conflict_names_its_causes(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "c", "1.0.0")
        await upload(client, author, "c", "2.0.0", publish=True)
        await publish(client, author, "b", "1.2.0", dependencies=[{"name": "c", "spec": "<2"}])
        body = await resolve(
            client, [{"name": "b", "spec": "*"}, {"name": "c", "spec": ">=2"}], expect=409
        )
        assert body["code"] == "resolution_impossible"
        assert "b 1.2.0 requires c<2" in body["causes"]
        assert "the request requires c>=2" in body["causes"]

    async def test_a_missing_dependency_is_a_cause(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "c", "1.0.0")
        await publish(client, author, "b", "1.0.0", dependencies=[{"name": "c", "spec": "*"}])
        await act(client, author, "c", "1.0.0", "yank", reason="broken")
        body = await resolve(client, [{"name": "b"}], expect=409)
        assert body["causes"] == [
            "b 1.0.0 requires c (any version) (only yanked versions match; pin one exactly to "
            "use it)"
        ]

    async def test_a_cycle_is_reported_with_its_members(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "a", "1.0.0")
        await publish(client, author, "b", "1.0.0", dependencies=[{"name": "a", "spec": "^1"}])
        await upload(
            client, author, "a", "1.1.0", dependencies=[{"name": "b", "spec": "^1"}], publish=True
        )
        body = await resolve(client, [{"name": "a", "spec": "^1.1"}], expect=409)
        assert body["code"] == "dependency_cycle"
        assert body["cycle"] == ["a", "b", "a"]
        assert "a -> b -> a" in body["detail"]


class TestYankedVersions:
    async def test_yanked_versions_are_skipped_unless_pinned_exactly(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "lib", "1.0.0")
        await upload(client, author, "lib", "1.1.0", publish=True)
        await act(client, author, "lib", "1.1.0", "yank", reason="data loss")
        assert chosen(await resolve(client, [{"name": "lib", "spec": "^1"}])) == [("lib", "1.0.0")]
        refused = await resolve(client, [{"name": "lib", "spec": ">=1.1"}], expect=409)
        assert refused["causes"] == [
            "the request requires lib>=1.1 (only yanked versions match; pin one exactly to use it)"
        ]
        pinned = await resolve(client, [{"name": "lib", "spec": "==1.1.0"}])
        assert chosen(pinned) == [("lib", "1.1.0")]
        assert pinned["packages"][0]["state"] == "yanked"
        assert chosen(await resolve(client, [{"name": "lib", "spec": "1.1.0"}])) == [
            ("lib", "1.1.0")
        ]

    async def test_deprecated_versions_still_resolve(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "lib", "1.0.0")
        await act(client, author, "lib", "1.0.0", "deprecate", reason="use 2")
        body = await resolve(client, [{"name": "lib"}])
        assert body["packages"][0]["state"] == "deprecated"


class TestPurchaseRequired:
    async def test_each_package_says_whether_the_caller_must_acquire_it(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "free-lib", "1.0.0")
        await publish(
            client,
            author,
            "paid-kit",
            "1.0.0",
            dependencies=[{"name": "free-lib", "spec": "*"}],
            price={"amount": 900, "currency": "usd"},
        )
        request = [{"name": "paid-kit"}]
        as_buyer = await resolve(client, request, org=buyer)
        assert [(p["name"], p["purchase_required"]) for p in as_buyer["packages"]] == [
            ("free-lib", True),
            ("paid-kit", True),
        ]
        assert as_buyer["packages"][1]["price"] == {"amount": 900, "currency": "usd"}
        assert as_buyer["packages"][0]["price"] is None
        purchased = await client.post(
            "/api/v1/marketplace/packages/free-lib/purchase", headers=buyer.headers
        )
        assert purchased.json()["status"] == "completed"
        again = await resolve(client, request, org=buyer)
        assert [p["purchase_required"] for p in again["packages"]] == [False, True]
        as_author = await resolve(client, request, org=author)
        assert [p["purchase_required"] for p in as_author["packages"]] == [False, False]
        anonymous = await resolve(client, request)
        assert [p["purchase_required"] for p in anonymous["packages"]] == [True, True]


class TestBadRequests:
    async def test_unknown_packages_bad_specs_and_empty_requests_are_refused(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "lib", "1.0.0")
        missing = await resolve(client, [{"name": "nope"}], expect=404)
        assert (missing["code"], missing["packages"]) == ("package_not_found", ["nope"])
        await create_package(client, author, "drafty")
        await upload(client, author, "drafty", "1.0.0")
        assert (await resolve(client, [{"name": "drafty"}], org=buyer, expect=404))[
            "code"
        ] == "package_not_found"
        bad = await resolve(client, [{"name": "lib", "spec": ">>1"}], expect=422)
        assert bad["code"] == "invalid_version_spec"
        assert (await resolve(client, [], expect=422))["code"] == "validation_error"
        too_many = [{"name": f"p{i}"} for i in range(201)]
        assert (await resolve(client, too_many, expect=422))["code"] == "validation_error"

    async def test_the_round_limit_stops_a_large_resolution(
        self, app_factory: Callable[..., FastAPI], author: Org, client: httpx.AsyncClient
    ) -> None:
        previous = "leaf"
        await publish(client, author, previous)
        for index in range(5):
            name = f"level-{index}"
            await publish(client, author, name, dependencies=[{"name": previous, "spec": "*"}])
            previous = name
        assert len(chosen(await resolve(client, [{"name": previous}]))) == 6
        limited = app_factory(marketplace_resolve_max_rounds=3)
        async with LifespanManager(limited):
            transport = httpx.ASGITransport(app=limited)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as other:
                body = await resolve(other, [{"name": previous}], expect=422)
                assert body["code"] == "resolution_too_complex"
