"""A small base for repositories: every query of a domain lives in its repository."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from sqlalchemy import Select, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.models import Base

ModelT = TypeVar("ModelT", bound=Base)


class Repository(Generic[ModelT]):
    """Reads are ``get_by_<field>`` (one or None) and ``list_<what>``; writes only flush."""

    model: type[ModelT]

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get_by_id(self, id: str, *, for_update: bool = False) -> ModelT | None:
        primary_key = inspect(self.model).primary_key[0]
        statement: Select[Any] = select(self.model).where(primary_key == id)
        if for_update:
            statement = statement.with_for_update()
        instance: ModelT | None = (await self.session.execute(statement)).scalar_one_or_none()
        return instance

    async def add(self, instance: ModelT) -> ModelT:
        self.session.add(instance)
        await self.session.flush()
        return instance

    async def delete(self, instance: ModelT) -> None:
        await self.session.delete(instance)
        await self.session.flush()
