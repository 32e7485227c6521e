"""Keyset pagination over time-sortable IDs.

Lists answer ``{"items": [...], "next_cursor": "..."}``; the client passes the cursor
back as ``?cursor=`` for the next page. Keyset (``WHERE id < cursor``) stays fast on
deep pages and never skips or repeats a row when new ones arrive meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from tollway.errors import Unprocessable
from tollway.kit.ids import is_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

ItemT = TypeVar("ItemT")


@dataclass(frozen=True, slots=True)
class PageParams:
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None


def page_of(limit: int, cursor: str | None) -> PageParams:
    """The page a client asked for (``?limit=&cursor=``); 422 ``invalid_cursor`` for a
    cursor this API did not give out. The query parameters themselves are read by
    :data:`tollway.kit.routing.PageParamsDep`, so this module needs no FastAPI (the CLI
    imports services without it)."""
    if cursor is not None and not is_id(cursor):
        raise Unprocessable("cursor is not one this API gave out", code="invalid_cursor")
    return PageParams(limit=limit, cursor=cursor)


class Page(BaseModel, Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None = None


@dataclass(frozen=True, slots=True)
class PageResult(Generic[ItemT]):
    items: list[ItemT]
    next_cursor: str | None


async def paginate(
    session: AsyncSession,
    statement: Select[Any],
    *,
    id_column: InstrumentedAttribute[str],
    params: PageParams,
    newest_first: bool = True,
) -> PageResult[Any]:
    """Run ``statement`` (selecting one entity) one page at a time, ordered by ID."""
    if params.cursor is not None:
        statement = statement.where(
            id_column < params.cursor if newest_first else id_column > params.cursor
        )
    statement = statement.order_by(id_column.desc() if newest_first else id_column.asc())
    rows = list((await session.execute(statement.limit(params.limit + 1))).scalars())
    has_more = len(rows) > params.limit
    rows = rows[: params.limit]
    next_cursor = getattr(rows[-1], id_column.key) if has_more and rows else None
    return PageResult(items=rows, next_cursor=next_cursor)
