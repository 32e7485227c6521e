"""State that lives for one transaction, under a name and a type.

A service that reads ahead for a chunk of work, or gathers rows to write at commit,
keeps them in the session's ``info`` dictionary (one per transaction: a sweep's
chunk, a request). A :class:`SessionKey` is that entry's name and type in one
object, so every reader and writer agrees on both::

    HELD_COUNTERS: SessionKey[dict[str, InvoiceCounter]] = SessionKey(
        "tollway.billing.held_counters"
    )
    HELD_COUNTERS.setdefault(session, {})[series] = counter
"""

from __future__ import annotations

from typing import Generic, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

T = TypeVar("T")


class SessionKey(Generic[T]):
    """One typed entry of ``session.info`` (the same dictionary for an
    :class:`~sqlalchemy.ext.asyncio.AsyncSession` and its sync session)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"SessionKey({self.name!r})"

    def get(self, session: Session | AsyncSession) -> T | None:
        return cast("T | None", session.info.get(self.name))

    def set(self, session: Session | AsyncSession, value: T) -> None:
        session.info[self.name] = value

    def setdefault(self, session: Session | AsyncSession, default: T) -> T:
        return cast("T", session.info.setdefault(self.name, default))

    def pop(self, session: Session | AsyncSession) -> T | None:
        return cast("T | None", session.info.pop(self.name, None))
