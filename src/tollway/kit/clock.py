"""One source of time for everything that bills, expires or retries.

Production uses :class:`SystemClock`. Tests and the sandbox move a :class:`ManualClock`
or an offset forward instead of sleeping, the way Stripe and Kill Bill test clocks do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock(Protocol):
    """Something that tells the current time, always timezone-aware UTC."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock, optionally shifted by an offset (the sandbox's test clock)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: int) -> datetime:
        self.offset += timedelta(seconds=seconds)
        return self.now()


class ManualClock:
    """A clock that stands still until told to move."""

    def __init__(self, start: datetime | None = None) -> None:
        moment = start or datetime(2026, 1, 1, tzinfo=UTC)
        if moment.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = moment.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        self._now += timedelta(seconds=seconds, **delta)
        return self._now

    def set(self, moment: datetime) -> None:
        if moment.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware time")
        self._now = moment.astimezone(UTC)
