"""The application's edge: which client address a request is counted against."""

from collections.abc import Callable

import httpx
from fastapi import FastAPI

from tests.fixtures.apps import client_from, started


async def failed_login(http: httpx.AsyncClient, number: int, forwarded_for: str) -> int:
    response = await http.post(
        "/api/v1/auth/login",
        json={"email": f"guess{number}@example.com", "password": "wrong password!"},
        headers={"X-Forwarded-For": forwarded_for},
    )
    return response.status_code


class TestTrustedProxies:
    async def test_by_default_no_peer_picks_its_address_with_x_forwarded_for(
        self, app: FastAPI
    ) -> None:
        async with client_from(app, "127.0.0.1") as http:
            statuses = [await failed_login(http, n, f"198.51.100.{n}") for n in range(6)]
        assert statuses == [401] * 5 + [429]

    async def test_a_trusted_proxy_names_the_client(
        self, app_factory: Callable[..., FastAPI]
    ) -> None:
        async with (
            started(app_factory, trusted_proxies="10.0.0.0/24") as app,
            client_from(app, "10.0.0.7") as proxy,
        ):
            statuses = [await failed_login(proxy, n, "203.0.113.9") for n in range(6)]
            other_client = await failed_login(proxy, 6, "203.0.113.10")
        assert statuses == [401] * 5 + [429]
        assert other_client == 401

    async def test_a_peer_outside_the_trusted_proxies_is_counted_by_its_own_address(
        self, app_factory: Callable[..., FastAPI]
    ) -> None:
        async with (
            started(app_factory, trusted_proxies="10.0.0.0/24") as app,
            client_from(app, "192.0.2.50") as peer,
        ):
            statuses = [await failed_login(peer, n, f"203.0.113.{n}") for n in range(6)]
        assert statuses == [401] * 5 + [429]
