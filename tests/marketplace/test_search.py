"""Search: ordering, filters, sorting, pagination, and any text a user may type."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from tests.marketplace.conftest import Org, act, names, publish, search, upload
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.marketplace.models import Package


async def set_downloads(app: FastAPI, name: str, downloads: int) -> None:
    database: Database = app.state.database
    async with database.transaction() as session:
        package = (
            await session.execute(Package.__table__.select().where(Package.name == name))
        ).one()
        await session.execute(
            Package.__table__.update().where(Package.id == package.id).values(downloads=downloads)
        )


class TestRanking:
    async def test_an_exact_name_comes_first_then_relevance(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(
            client,
            author,
            "auth-toolkit",
            description="Login, sessions and auth helpers for web applications.",
            keywords=["auth", "login"],
        )
        await publish(
            client,
            author,
            "blog-starter",
            description="A blog with auth built in, comments and an admin for editors.",
            keywords=["blog"],
        )
        await publish(
            client,
            author,
            "auth",
            description="Minimal authentication template for small services.",
            keywords=["security"],
        )
        result = await search(client, query="auth")
        assert names(result) == ["auth", "auth-toolkit", "blog-starter"]
        assert result["total"] == 3

    async def test_name_and_keyword_matches_come_before_description_matches_across_pages(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        for name in ("redis-cache", "redis-queue", "redis-lock"):
            await publish(client, author, name, keywords=["redis"])
        for name in ("session-store", "rate-limiter"):
            await publish(
                client,
                author,
                name,
                description="A template that keeps its state in Redis with tests and CI.",
                keywords=["state"],
            )
        pages = [
            names(await search(client, query="redis", limit=2, page=page)) for page in (1, 2, 3)
        ]
        flat = [name for page in pages for name in page]
        assert sorted(flat[:3]) == ["redis-cache", "redis-lock", "redis-queue"]
        assert sorted(flat[3:]) == ["rate-limiter", "session-store"]
        assert (await search(client, query="redis", limit=2))["total"] == 5
        exact = await search(client, query="redis-lock", limit=2, page=1)
        assert names(exact)[0] == "redis-lock"

    async def test_ties_in_relevance_go_to_the_most_downloaded(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org
    ) -> None:
        for name in ("alpha-crud", "beta-crud", "gamma-crud"):
            await publish(
                client,
                author,
                name,
                description="CRUD API template with tests included.",
                keywords=["crud"],
            )
        await set_downloads(app, "beta-crud", 50)
        await set_downloads(app, "gamma-crud", 10)
        assert names(await search(client, query="crud template")) == [
            "beta-crud",
            "gamma-crud",
            "alpha-crud",
        ]

    async def test_the_last_word_matches_as_a_prefix(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "flask-login", keywords=["flask", "auth"])
        await publish(client, author, "fastapi-crud", keywords=["fastapi"])
        assert names(await search(client, query="flask-lo")) == ["flask-login"]
        assert names(await search(client, query="Flask_Login")) == ["flask-login"]
        assert names(await search(client, query="fast")) == ["fastapi-crud"]


class TestFiltersSortingPages:
    async def test_filters_by_category_author_license_and_quality(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "web-one", category="web", license="MIT")
        await publish(client, author, "cli-one", category="cli", license="Apache-2.0")
        await publish(
            client,
            buyer,
            "web-two",
            category="web",
            license="MIT",
            description="Short but fine template.",
            keywords=[],
        )
        assert names(await search(client, category="web", sort="downloads")) == [
            "web-one",
            "web-two",
        ]
        assert names(await search(client, author="Buyer Inc")) == ["web-two"]
        assert names(await search(client, author=author.organization_id, category="cli")) == [
            "cli-one"
        ]
        assert names(await search(client, license="apache-2.0")) == ["cli-one"]
        high = await search(client, min_quality=55)  # 58 against 48
        assert "web-two" not in names(high)
        assert set(names(high)) == {"web-one", "cli-one"}

    async def test_sorts_by_downloads_or_most_recent_release(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org, clock: ManualClock
    ) -> None:
        await publish(client, author, "older")
        clock.advance(seconds=3600)
        await publish(client, author, "newer")
        await set_downloads(app, "older", 7)
        assert names(await search(client, sort="downloads")) == ["older", "newer"]
        assert names(await search(client, sort="recent")) == ["newer", "older"]
        clock.advance(seconds=3600)
        await upload(client, author, "older", "1.1.0", publish=True)
        assert names(await search(client, sort="recent")) == ["older", "newer"]

    async def test_pages_carry_the_total(self, client: httpx.AsyncClient, author: Org) -> None:
        for index in range(5):
            await publish(client, author, f"tpl-{index}", keywords=["tpl"])
        first = await search(client, query="tpl", limit=2, page=1, sort="downloads")
        third = await search(client, query="tpl", limit=2, page=3, sort="downloads")
        beyond = await search(client, query="tpl", limit=2, page=9)
        assert (first["total"], first["page"], len(first["items"])) == (5, 1, 2)
        assert len(third["items"]) == 1
        assert (beyond["items"], beyond["total"]) == ([], 5)
        second = await search(client, query="tpl", limit=2, page=2, sort="downloads")
        seen = names(first) + names(second) + names(third)
        assert sorted(seen) == [f"tpl-{index}" for index in range(5)]
        by_relevance = [
            name
            for page in (1, 2, 3)
            for name in names(await search(client, query="tpl", limit=2, page=page))
        ]
        assert sorted(by_relevance) == [f"tpl-{index}" for index in range(5)]

    async def test_the_same_search_works_with_query_parameters(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "flask-login", keywords=["flask"])
        response = await client.get(
            "/api/v1/marketplace/search", params={"query": "flask", "sort": "downloads"}
        )
        assert response.status_code == 200
        assert names(response.json()) == ["flask-login"]
        bad = await client.get("/api/v1/marketplace/search", params={"sort": "price"})
        assert bad.status_code == 422


class TestUserInput:
    async def test_operators_quotes_and_symbols_never_error(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "flask-login", keywords=["flask"])
        await publish(client, author, "cpp-starter", keywords=["c++", "cmake"])
        for query in [
            "c++",
            "flask-login",
            "a AND NOT b",
            '"',
            '"unbalanced',
            "",
            "   ",
            "*",
            "NEAR(a b)",
            "flask OR",
            "name:flask",
            "-flask",
            "(",
            "'; DROP TABLE marketplace_packages; --",
            "ünïcödé",
            "^~@#$%",
        ]:
            response = await client.post("/api/v1/marketplace/search", json={"query": query})
            assert response.status_code == 200, (query, response.text)
        assert names(await search(client, query="flask-login")) == ["flask-login"]
        assert names(await search(client, query="c++")) == ["cpp-starter"]
        assert names(await search(client, query="a AND NOT b")) == []
        assert (await search(client, query=""))["total"] == 2


class TestWhatLeavesSearch:
    async def test_deprecated_and_yanked_only_packages_leave_search(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "keeper", keywords=["tpl"])
        await publish(client, author, "old-one", keywords=["tpl"])
        await publish(client, author, "bad-one", keywords=["tpl"])
        await publish(client, author, "two-versions", keywords=["tpl"])
        await upload(client, author, "two-versions", "2.0.0", publish=True)
        await act(client, author, "old-one", "1.0.0", "deprecate")
        await act(client, author, "bad-one", "1.0.0", "yank", reason="malware")
        await act(client, author, "two-versions", "2.0.0", "yank", reason="regression")
        result = await search(client, query="tpl", sort="downloads")
        assert sorted(names(result)) == ["keeper", "two-versions"]
        two = next(item for item in result["items"] if item["name"] == "two-versions")
        assert two["latest_version"] == "1.0.0"
        assert sorted(names(await search(client, sort="downloads"))) == ["keeper", "two-versions"]


class TestSearchDoesNotWait:
    async def test_search_and_resolve_answer_while_a_write_is_in_progress(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "flask-login", keywords=["flask"])
        database: Database = app.state.database
        async with database.transaction() as writing:
            # This transaction holds the writer (on SQLite: the process's write lock).
            await writing.execute(text("SELECT 1"))
            found = await asyncio.wait_for(
                client.post("/api/v1/marketplace/search", json={"query": "flask"}), 10
            )
            resolved = await asyncio.wait_for(
                client.post(
                    "/api/v1/marketplace/resolve",
                    json={"requirements": [{"name": "flask-login"}]},
                    headers={"Idempotency-Key": "ignored-for-reads"},
                ),
                10,
            )
        assert names(found.json()) == ["flask-login"]
        assert resolved.status_code == 200
