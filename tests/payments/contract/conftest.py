"""Every test here runs twice: on the sandbox and on Stripe (the fake Stripe server)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.fixtures.fake_stripe import FakeStripe, no_retry_pause
from tests.fixtures.payment_harness import (
    ProviderHarness,
    SandboxHarness,
    StripeHarness,
    fake_stripe,
    stripe_settings,
)
from tollway.kit.clock import ManualClock

__all__ = ["fake_stripe", "no_retry_pause"]


@pytest.fixture(params=["sandbox", "stripe"])
def provider_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def app(
    provider_name: str, app_factory: Callable[..., FastAPI], request: pytest.FixtureRequest
) -> AsyncIterator[FastAPI]:
    overrides: dict[str, Any] = {}
    if provider_name == "stripe":
        overrides = stripe_settings(request.getfixturevalue("fake_stripe"))
    application = app_factory(**overrides)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def provider(
    provider_name: str,
    app: FastAPI,
    client: httpx.AsyncClient,
    clock: ManualClock,
    request: pytest.FixtureRequest,
) -> ProviderHarness:
    if provider_name == "stripe":
        fake: FakeStripe = request.getfixturevalue("fake_stripe")
        return StripeHarness(app, client, clock, fake)
    return SandboxHarness(app, client)
