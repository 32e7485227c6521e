"""A small per-process cache whose entries live at most ``ttl`` of the business clock.

Hot paths (authentication, entitlement decisions) read through it so that one
process asks the database at most once per entry per second; a change made by any
process is therefore seen everywhere within the TTL (one second by default). A
process that makes a change itself calls :meth:`TTLCache.discard` to see it at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from datetime import datetime, timedelta
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_TTL = timedelta(seconds=1)


class TTLCache(Generic[K, V]):
    def __init__(self, *, ttl: timedelta = DEFAULT_TTL, max_entries: int = 50_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[V, datetime]] = {}

    def get(self, key: K, *, now: datetime) -> tuple[bool, V | None]:
        """(hit, value): a hit only while ``stored_at <= now < stored_at + ttl``."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        value, stored_at = entry
        if stored_at <= now < stored_at + self.ttl:
            return True, value
        del self._entries[key]
        return False, None

    async def get_or_load(self, key: K, *, now: datetime, load: Callable[[], Awaitable[V]]) -> V:
        """The cached value of ``key``, or ``await load()`` stored for the next ``ttl``."""
        hit, value = self.get(key, now=now)
        if hit and value is not None:
            return value
        loaded = await load()
        self.put(key, loaded, now=now)
        return loaded

    def put(self, key: K, value: V, *, now: datetime) -> None:
        if len(self._entries) >= self.max_entries:
            # Crude but bounded: a full cache starts over rather than grow.
            self._entries.clear()
        self._entries[key] = (value, now)

    def discard(self, key: K) -> None:
        self._entries.pop(key, None)

    def discard_where(self, predicate: Callable[[V], bool]) -> None:
        for key, (value, _at) in list(self._entries.items()):
            if predicate(value):
                del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
