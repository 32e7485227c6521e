"""Per-minute rate limits with the ``limits`` library (moving window: exact counts).

In memory by default; with ``TOLLWAY_REDIS_URL`` the windows live in Redis, so every
process counts against the same limit.
``limits`` keeps wall-clock time, not the business Clock: rate limits protect the
service in real time.

When Redis does not answer (refused, reset, or silent past ``REDIS_TIMEOUT_SECONDS``)
the limiter counts in this process's memory instead, so requests are still answered and
still limited, each process on its own (with N processes a limit lets through up to N
times as much) until Redis is back. It tries Redis again ``RETRY_REDIS_AFTER_SECONDS``
after a failure, so an outage costs one short wait per process and interval, not one
per request; it logs ``ratelimit.redis_unavailable`` once when an outage starts and
``ratelimit.redis_recovered`` when it ends (docs/scaling.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from redis.asyncio import BlockingConnectionPool
from redis.exceptions import RedisError

#: Connections per process to Redis for rate limiting.
REDIS_CONNECTIONS = 32
#: Longest wait for a connect to Redis or for its answer: past it, Redis counts as down.
REDIS_TIMEOUT_SECONDS = 1.0
#: Longest wait for a free connection of the pool. A burst of requests queues here
#: (back-pressure, not an outage: a busy two-core machine needed more than 0.25 s for a
#: burst of 160 hits), so it is longer than the Redis timeout.
POOL_WAIT_SECONDS = 5.0
#: After Redis failed, how long the limiter counts in memory before it asks Redis again.
RETRY_REDIS_AFTER_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    allowed: bool
    limit: int
    remaining: int
    #: Seconds until the window frees a slot again.
    reset_seconds: int

    @property
    def headers(self) -> dict[str, str]:
        """The ``RateLimit-*`` headers (draft-ietf-httpapi-ratelimit-headers)."""
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_seconds))
        return headers


class RateLimiter:
    def __init__(self, redis_url: str | None = None) -> None:
        storage: Storage
        self._pool: BlockingConnectionPool | None = None
        if redis_url is not None:
            # Its own blocking pool: a burst of requests waits for a connection instead of
            # failing with "too many connections", as redis-py's default pool would.
            self._pool = BlockingConnectionPool.from_url(
                redis_url,
                max_connections=REDIS_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            )
            storage = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix="tollway:ratelimit",
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]  # limits types options as scalars but hands them to redis-py
            )
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        #: Counts while Redis is down (the same strategy, in this process's memory).
        self._fallback = (
            MovingWindowRateLimiter(MemoryStorage()) if redis_url is not None else self.strategy
        )
        #: time.monotonic() of the failure that started the current outage.
        self._down_since: float | None = None
        self._retry_redis_at = 0.0
        self._items: dict[int, RateLimitItemPerMinute] = {}

    @property
    def redis_down(self) -> bool:
        return self._down_since is not None

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()

    def _item(self, per_minute: int) -> RateLimitItemPerMinute:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        return item

    async def hit(self, per_minute: int, *identifiers: str) -> RateLimitStatus:
        """Count one request against ``per_minute`` for ``identifiers`` (in memory while
        Redis is down)."""
        item = self._item(per_minute)
        if self._fallback is self.strategy or time.monotonic() < self._retry_redis_at:
            return await _hit(self._fallback, item, identifiers)
        try:
            status = await _hit(self.strategy, item, identifiers)
        except (StorageError, RedisError, OSError) as error:
            self._redis_failed(error)
            return await _hit(self._fallback, item, identifiers)
        if self._down_since is not None:
            _log().info(
                "ratelimit.redis_recovered",
                down_seconds=round(time.monotonic() - self._down_since, 1),
            )
            self._down_since = None
        return status

    def _redis_failed(self, error: Exception) -> None:
        now = time.monotonic()
        self._retry_redis_at = now + RETRY_REDIS_AFTER_SECONDS
        if self._down_since is not None:
            return  # logged when the outage began
        self._down_since = now
        cause = error.__cause__ or error
        _log().warning(
            "ratelimit.redis_unavailable",
            error=f"{type(cause).__name__}: {cause}",
            fallback="in-process limits",
            retry_seconds=RETRY_REDIS_AFTER_SECONDS,
        )

    async def reset(self) -> None:
        await self._fallback.storage.reset()
        if self._fallback is not self.strategy:
            await self.storage.reset()


def _log() -> Any:
    # Looked up per event (two an outage): a logger cached at import would keep the
    # stream of whatever stderr was at its first use.
    return structlog.get_logger("tollway.entitlements.ratelimit")


async def _hit(
    strategy: MovingWindowRateLimiter, item: RateLimitItemPerMinute, identifiers: tuple[str, ...]
) -> RateLimitStatus:
    allowed = await strategy.hit(item, *identifiers)
    reset_at, remaining = await strategy.get_window_stats(item, *identifiers)
    return RateLimitStatus(
        allowed=allowed,
        limit=item.amount,
        remaining=max(0, remaining),
        reset_seconds=max(0, math.ceil(reset_at - time.time())),
    )
