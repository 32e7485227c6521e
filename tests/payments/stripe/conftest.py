"""Tollway on the ``stripe`` provider, the real SDK pointed at the fake Stripe server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.fixtures.fake_stripe import FakeStripe, no_retry_pause
from tests.fixtures.payment_harness import StripeHarness, fake_stripe, stripe_settings
from tollway.kit.clock import ManualClock

__all__ = ["fake_stripe", "no_retry_pause"]


@pytest.fixture
async def app(
    app_factory: Callable[..., FastAPI], fake_stripe: FakeStripe
) -> AsyncIterator[FastAPI]:
    application = app_factory(**stripe_settings(fake_stripe))
    async with LifespanManager(application):
        yield application


@pytest.fixture
def stripe(
    app: FastAPI, client: httpx.AsyncClient, clock: ManualClock, fake_stripe: FakeStripe
) -> StripeHarness:
    return StripeHarness(app, client, clock, fake_stripe)
