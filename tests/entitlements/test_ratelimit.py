from __future__ import annotations

import asyncio

from fastapi import FastAPI

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
