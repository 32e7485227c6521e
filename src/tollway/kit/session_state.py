"""State that lives for one transaction, under a name and a type.

A service that reads ahead for a chunk of work (a billing run's cards, a webhook
chunk's payments) keeps what it read in the session until the transaction ends. A
:class:`SessionKey` names that state and gives it a type, instead of a string in
``session.info`` and a cast at every reader; the key object itself is the entry's
key, so two keys never collide even when their names do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar, cast

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

T = TypeVar("T")


class SessionKey(Generic[T]):
    """A typed entry of ``session.info`` (the same dictionary for an
    :class:`~sqlalchemy.ext.asyncio.AsyncSession` and its sync session): ``get``,
    ``set``, ``pop``, ``setdefault``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"SessionKey({self.name!r})"

    def get(self, session: Session | AsyncSession) -> T | None:
        return cast("T | None", session.info.get(self))

    def set(self, session: Session | AsyncSession, value: T) -> None:
        session.info[self] = value

    def pop(self, session: Session | AsyncSession) -> T | None:
        return cast("T | None", session.info.pop(self, None))

    def setdefault(self, session: Session | AsyncSession, factory: Callable[[], T]) -> T:
        """The entry, made by ``factory`` first when the session has none."""
        if self not in session.info:
            session.info[self] = factory()
        return cast("T", session.info[self])
