"""The shared Redis connection, present only when ``TOLLWAY_REDIS_URL`` is set."""

from __future__ import annotations

from redis.asyncio import Redis


def create_redis(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, health_check_interval=30)
