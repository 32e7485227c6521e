"""Authors, buyers and packages for the marketplace tests, made through the HTTP API."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.identity import Account, create_api_key, register

DESCRIPTION = "A project template with tests, CI configuration and documentation."


@dataclass(frozen=True)
class Org:
    account: Account
    key: str

    @property
    def organization_id(self) -> str:
        return self.account.organization_id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


async def make_org(client: httpx.AsyncClient, *, name: str) -> Org:
    account = await register(client, organization_name=name)
    key = await create_api_key(
        client,
        account,
        scopes=[
            "marketplace:read",
            "marketplace:purchase",
            "marketplace:publish",
            "billing:purchase",
        ],
    )
    return Org(account=account, key=key)


@pytest.fixture
async def author(app: FastAPI, client: httpx.AsyncClient) -> Org:
    return await make_org(client, name="Acme Templates")


@pytest.fixture
async def buyer(app: FastAPI, client: httpx.AsyncClient) -> Org:
    return await make_org(client, name="Buyer Inc")


async def create_package(
    client: httpx.AsyncClient,
    org: Org,
    name: str,
    *,
    description: str = DESCRIPTION,
    category: str = "web",
    keywords: list[str] | None = None,
    license: str = "MIT",
    price: dict[str, Any] | None = None,
    expect: int = 201,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "description": description,
        "category": category,
        "keywords": keywords if keywords is not None else ["python"],
        "license": license,
    }
    if price is not None:
        body["price"] = price
    response = await client.post("/api/v1/marketplace/packages", json=body, headers=org.headers)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def upload(
    client: httpx.AsyncClient,
    org: Org,
    package: str,
    version: str,
    *,
    content: bytes | None = None,
    dependencies: list[dict[str, str]] | None = None,
    publish: bool = False,
    expect: int = 201,
) -> dict[str, Any]:
    data: dict[str, str] = {"version": version}
    if dependencies is not None:
        data["dependencies"] = json.dumps(dependencies)
    if publish:
        data["publish"] = "true"
    payload = content if content is not None else f"{package}@{version} archive".encode()
    response = await client.post(
        f"/api/v1/marketplace/packages/{package}/versions",
        data=data,
        files={"artifact": ("package.tar.gz", payload, "application/gzip")},
        headers=org.headers,
    )
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def act(
    client: httpx.AsyncClient,
    org: Org,
    package: str,
    version: str,
    action: str,
    *,
    reason: str | None = None,
    expect: int = 200,
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/marketplace/packages/{package}/versions/{version}/{action}",
        json={"reason": reason} if reason is not None else None,
        headers=org.headers,
    )
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def publish(
    client: httpx.AsyncClient,
    org: Org,
    name: str,
    version: str = "1.0.0",
    *,
    dependencies: list[dict[str, str]] | None = None,
    **package: Any,
) -> dict[str, Any]:
    """A package (created if new) with ``version`` uploaded and published."""
    exists = await client.get(f"/api/v1/marketplace/packages/{name}", headers=org.headers)
    if exists.status_code == 404:
        await create_package(client, org, name, **package)
    return await upload(client, org, name, version, dependencies=dependencies, publish=True)


async def search(client: httpx.AsyncClient, **query: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/marketplace/search", json=query)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def names(result: dict[str, Any]) -> list[str]:
    return [item["name"] for item in result["items"]]
