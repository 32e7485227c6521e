from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from structlog.testing import capture_logs

from tests.fixtures.apps import client_from
from tests.fixtures.entitlements import key_headers, put_on_plan
from tests.fixtures.identity import create_api_key, register
from tollway.entitlements.ratelimit import RateLimiter
from tollway.entitlements.service import EntitlementsRuntime


def limiter_of(app: FastAPI) -> RateLimiter:
    runtime: EntitlementsRuntime = app.state.entitlements
    return runtime.limiter


class TestRateLimitAccuracy:
    """``limits`` keeps wall-clock time, so accuracy is counted inside one window
    (a minute) without sleeping: exactly the limit passes, never more."""

    async def test_sequential_hits_allow_exactly_the_limit(self, app: FastAPI) -> None:
        limiter = limiter_of(app)  # Redis when the suite runs with TOLLWAY_TEST_REDIS_URL
        limit = 50
        answers = [await limiter.hit(limit, "org_a", "key_a", "f") for _ in range(3 * limit)]
        allowed = sum(answer.allowed for answer in answers)
        assert limit <= allowed <= 1.05 * limit
        assert [a.remaining for a in answers[:3]] == [49, 48, 47]
        assert answers[-1].remaining == 0

    async def test_concurrent_hits_allow_exactly_the_limit(self, app: FastAPI) -> None:
        limiter = limiter_of(app)
        limit = 40
        answers = await asyncio.gather(
            *(limiter.hit(limit, "org_b", "key_b", "f") for _ in range(4 * limit))
        )
        assert limit <= sum(answer.allowed for answer in answers) <= 1.05 * limit

    async def test_limits_are_counted_per_subject(self, app: FastAPI) -> None:
        limiter = limiter_of(app)
        for subject in ("key_1", "key_2"):
            answers = [await limiter.hit(2, "org_c", subject, "f") for _ in range(3)]
            assert [a.allowed for a in answers] == [True, True, False]


@pytest.fixture
async def silent_redis() -> AsyncIterator[str]:
    """A Redis URL on loopback whose server accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def refused_redis() -> str:
    """A Redis URL on a loopback port where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


class TestRedisDown:
    @pytest.mark.parametrize("server", ["refused", "silent"])
    async def test_api_keys_and_rate_limited_decisions_are_answered_and_still_limited(
        self,
        app_factory: Callable[..., FastAPI],
        silent_redis: str,
        server: str,
    ) -> None:
        url = refused_redis() if server == "refused" else silent_redis
        application = app_factory(redis_url=url)
        with capture_logs() as logs:
            async with LifespanManager(application), client_from(application) as http:
                owner = await register(http)
                headers = key_headers(await create_api_key(http, owner))
                await put_on_plan(application, owner.organization_id, "pro")
                calls = [await http.get("/api/v1/auth/me", headers=headers) for _ in range(5)]
                decisions = [
                    await http.post(
                        "/api/v1/authorize", json={"feature": "ai.generate"}, headers=headers
                    )
                    for _ in range(31)
                ]
                ready = await http.get("/api/v1/ready")
        assert [call.status_code for call in calls] == [200] * 5
        assert calls[-1].headers["RateLimit-Remaining"] == str(600 - 5)
        assert {decision.status_code for decision in decisions} == {200}
        # The pro plan's 30 a minute for ai.generate, counted in this process meanwhile.
        allowed = [decision.json()["allowed"] for decision in decisions]
        assert allowed == [True] * 30 + [False]
        assert decisions[-1].json()["code"] == "rate_limited"
        assert ready.status_code == 503
        events = [entry["event"] for entry in logs]
        assert events.count("ratelimit.redis_unavailable") == 1
