"""One source of time for everything that bills, expires or retries.

Production uses :class:`SystemClock`. Tests and the sandbox move a :class:`ManualClock`
or an offset forward instead of sleeping, the way Stripe and Kill Bill test clocks do.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError


def utcnow() -> datetime:
    return datetime.now(UTC)


def _in_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise PydanticCustomError(
            "timezone_aware", "a time needs a UTC offset, e.g. 2026-01-15T12:00:00Z"
        )
    return moment.astimezone(UTC)


#: A time a caller sends (``expires_at``, ``grace_ends_at``...): ISO 8601 with a UTC
#: offset (``Z`` or ``+01:00``), read as UTC. A time without an offset is ambiguous and
#: refused (422 ``validation_error``, error type ``timezone_aware``), as usage timestamps
#: are, rather than guessed or compared with aware times further in.
UtcDatetime = Annotated[
    datetime,
    AfterValidator(_in_utc),
    Field(description="ISO 8601 with a UTC offset, e.g. 2026-01-15T12:00:00Z"),
]


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
