"""Per-minute rate limits with the ``limits`` library (moving window: exact counts).

In memory by default; with ``TOLLWAY_REDIS_URL`` the windows live in Redis, so every
process counts against the same limit.
``limits`` keeps wall-clock time, not the business Clock: rate limits protect the
service in real time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import BlockingConnectionPool

#: Connections per process to Redis for rate limiting.
REDIS_CONNECTIONS = 32


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
                redis_url, max_connections=REDIS_CONNECTIONS, timeout=5, socket_timeout=2
            )
            storage = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix="tollway:ratelimit",
                connection_pool=self._pool,  # type: ignore[arg-type]  # limits types options as scalars but hands them to redis-py
            )
        else:
            storage = MemoryStorage()
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self._items: dict[int, RateLimitItemPerMinute] = {}

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()

    def _item(self, per_minute: int) -> RateLimitItemPerMinute:
        item = self._items.get(per_minute)
        if item is None:
            item = self._items[per_minute] = RateLimitItemPerMinute(per_minute)
        return item

    async def hit(self, per_minute: int, *identifiers: str) -> RateLimitStatus:
        """Count one request against ``per_minute`` for ``identifiers``."""
        item = self._item(per_minute)
        allowed = await self.strategy.hit(item, *identifiers)
        reset_at, remaining = await self.strategy.get_window_stats(item, *identifiers)
        return RateLimitStatus(
            allowed=allowed,
            limit=per_minute,
            remaining=max(0, remaining),
            reset_seconds=max(0, math.ceil(reset_at - time.time())),
        )

    async def reset(self) -> None:
        await self.storage.reset()
