from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from tests.fixtures.entitlements import key_headers
from tests.fixtures.identity import create_api_key, register
from tollway.cli import app as cli
from tollway.config import Settings
from tollway.kit.clock import ManualClock
from tollway.plans.catalog import DEFAULT_CATALOG_PATH

runner = CliRunner()


@pytest.fixture
def environment(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLWAY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("TOLLWAY_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("TOLLWAY_LOG_LEVEL", "warning")


def repriced_catalog(tmp_path: Path) -> Path:
    text = DEFAULT_CATALOG_PATH.read_text()
    text = text.replace("amount = 14900", "amount = 19900")
    text = text.replace(
        'sync = { quota = 100, enforcement = "hard" }', 'sync = { quota = 2, enforcement = "hard" }'
    )
    path = tmp_path / "catalog.toml"
    path.write_text(text)
    return path


class TestCatalogCommands:
    def test_check_accepts_the_shipped_catalog_and_refuses_a_broken_one(
        self, tmp_path: Path
    ) -> None:
        ok = runner.invoke(cli, ["catalog", "check", str(DEFAULT_CATALOG_PATH)])
        assert ok.exit_code == 0, ok.output
        assert "3 plans" in ok.output
        broken = tmp_path / "broken.toml"
        broken.write_text('default_plan = "gold"\n[plans.free]\n')
        refused = runner.invoke(cli, ["catalog", "check", str(broken)])
        assert refused.exit_code == 1
        assert "invalid_catalog" in refused.output

    async def test_load_reaches_the_running_app_within_a_second(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        clock: ManualClock,
        environment: None,
        tmp_path: Path,
    ) -> None:
        account = await register(client)
        headers = key_headers(await create_api_key(client, account))
        before = await client.post("/api/v1/authorize", json={"feature": "sync"}, headers=headers)
        assert before.json()["remaining"] == {"sync_runs": 99}
        loaded = await asyncio.to_thread(
            runner.invoke, cli, ["catalog", "load", str(repriced_catalog(tmp_path))]
        )
        assert loaded.exit_code == 0, loaded.output
        assert "catalog version 2 active" in loaded.output
        clock.advance(timedelta(seconds=1).total_seconds())
        answers = [
            (
                await client.post("/api/v1/authorize", json={"feature": "sync"}, headers=headers)
            ).json()
            for _ in range(2)
        ]
        assert answers[0]["allowed"] is True
        assert (answers[1]["allowed"], answers[1]["code"]) == (False, "quota_exceeded")
        pricing = (await client.get("/api/v1/billing/pricing")).json()
        assert pricing["catalog_version"] == 2
        assert next(p for p in pricing["plans"] if p["id"] == "pro")["price"]["amount"] == 19900

    async def test_assign_and_override_change_an_organization(
        self, app: FastAPI, client: httpx.AsyncClient, environment: None
    ) -> None:
        account = await register(client)
        assigned = await asyncio.to_thread(
            runner.invoke, cli, ["catalog", "assign", account.organization_id, "pro"]
        )
        assert assigned.exit_code == 0, assigned.output
        overridden = await asyncio.to_thread(
            runner.invoke,
            cli,
            ["catalog", "override", account.organization_id, '{"features": {"api": {"quota": 7}}}'],
        )
        assert overridden.exit_code == 0, overridden.output
        unknown = await asyncio.to_thread(
            runner.invoke, cli, ["catalog", "assign", account.organization_id, "gold"]
        )
        assert unknown.exit_code == 1
        assert "unknown_plan" in unknown.output
        entitlements = await client.get("/api/v1/entitlements", headers=account.headers)
        assert entitlements.json()["plan"] == "pro"
        assert entitlements.json()["limits"]["api_calls"] == 7
