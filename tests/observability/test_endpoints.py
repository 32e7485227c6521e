from collections.abc import Callable
from pathlib import Path

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI


class TestHealth:
    async def test_health_answers_ok(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/health")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}

    async def test_ready_when_database_is_migrated(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/ready")
        assert response.status_code == 200
        assert response.json()["checks"]["database"] == "ok"
        assert response.json()["checks"]["migrations"] == "ok"


class TestNotReady:
    async def test_pending_migrations_make_ready_503(
        self, app_factory: Callable[..., FastAPI], tmp_path: Path
    ) -> None:
        empty = app_factory(database_url=f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        async with LifespanManager(empty):
            transport = httpx.ASGITransport(app=empty)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/api/v1/ready")
        assert response.status_code == 503
        body = response.json()
        assert body["code"] == "not_ready"
        assert body["checks"]["migrations"] == "pending"

    async def test_an_unreachable_redis_makes_ready_503(
        self, app_factory: Callable[..., FastAPI]
    ) -> None:
        broken = app_factory(redis_url="redis://127.0.0.1:1/0")
        async with LifespanManager(broken):
            transport = httpx.ASGITransport(app=broken)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/api/v1/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["redis"] == "unreachable"

    async def test_migrate_on_start_brings_an_empty_database_to_head(
        self, app_factory: Callable[..., FastAPI], tmp_path: Path
    ) -> None:
        fresh = app_factory(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}", migrate_on_start=True
        )
        async with LifespanManager(fresh):
            transport = httpx.ASGITransport(app=fresh)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.get("/api/v1/ready")
        assert response.status_code == 200


class TestMetricsAndDocs:
    async def test_metrics_count_requests_by_route_template(
        self, client: httpx.AsyncClient
    ) -> None:
        await client.get("/api/v1/health")
        await client.get("/api/v1/does-not-exist/42")
        text = (await client.get("/metrics")).text
        assert (
            'tollway_http_requests_total{method="GET",route="/api/v1/health",status="200"}' in text
        )
        assert 'route="unmatched",status="404"' in text
        assert "/does-not-exist/42" not in text
        assert "tollway_http_request_duration_seconds_bucket" in text

    async def test_openapi_document_is_served(self, client: httpx.AsyncClient) -> None:
        document = (await client.get("/api/v1/openapi.json")).json()
        assert document["info"]["title"] == "Tollway"
        assert "/api/v1/health" in document["paths"]

    async def test_docs_page_needs_no_internet(self, client: httpx.AsyncClient) -> None:
        page = await client.get("/api/v1/docs")
        assert page.status_code == 200
        assert "cdn." not in page.text
        assert "/api/v1/docs/static/swagger-ui-bundle.js" in page.text
        script = await client.get("/api/v1/docs/static/swagger-ui-bundle.js")
        assert script.status_code == 200
