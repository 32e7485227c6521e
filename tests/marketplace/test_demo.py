"""The demo loader fills the marketplace and can run again without changing anything."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tollway.kit.sweeps import SweepContext
from tollway.marketplace.demo import PACKAGES, load_marketplace


class TestDemo:
    async def test_the_demo_publishes_searchable_packages_and_is_safe_to_rerun(
        self, app: FastAPI, client: httpx.AsyncClient
    ) -> None:
        context = SweepContext(
            database=app.state.database, clock=app.state.clock, settings=app.state.settings
        )
        first = await load_marketplace(context)
        assert first.startswith(f"{len(PACKAGES)} packages")
        second = await load_marketplace(context)
        assert second.startswith("0 packages and 0 versions")
        everything = (await client.get("/api/v1/marketplace/search", params={"limit": 100})).json()
        assert everything["total"] >= 25
        paid = [item for item in everything["items"] if not item["free"]]
        assert len(paid) >= 3
        resolved = await client.post(
            "/api/v1/marketplace/resolve",
            json={"requirements": [{"name": "fastapi-saas-kit", "spec": "^1"}]},
        )
        assert resolved.status_code == 200, resolved.text
        chosen = {p["name"]: p["version"] for p in resolved.json()["packages"]}
        assert chosen["fastapi-starter"] == "2.0.0"
        assert chosen["python-base"] == "2.0.0"
        django = (await client.get("/api/v1/marketplace/packages/django-starter")).json()
        assert django["latest_version"] == "1.1.0"
