from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tollway.kit.cache import TTLCache

START = datetime(2026, 1, 1, tzinfo=UTC)


class TestReadThrough:
    async def test_a_value_is_loaded_once_per_second_and_again_after_a_change(self) -> None:
        cache: TTLCache[str, int] = TTLCache(ttl=timedelta(seconds=1))
        loads: list[int] = []

        async def load() -> int:
            loads.append(len(loads) + 1)
            return len(loads)

        assert await cache.get_or_load("org", now=START, load=load) == 1
        assert (
            await cache.get_or_load("org", now=START + timedelta(milliseconds=999), load=load) == 1
        )
        assert await cache.get_or_load("org", now=START + timedelta(seconds=1), load=load) == 2
        cache.discard("org")
        assert await cache.get_or_load("org", now=START + timedelta(seconds=1), load=load) == 3
        assert loads == [1, 2, 3]

    async def test_a_clock_moved_back_does_not_serve_a_value_from_the_future(self) -> None:
        cache: TTLCache[str, str] = TTLCache()

        async def load() -> str:
            return "fresh"

        cache.put("org", "stored later", now=START + timedelta(seconds=5))
        assert await cache.get_or_load("org", now=START, load=load) == "fresh"
