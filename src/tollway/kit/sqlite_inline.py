"""An aiosqlite-shaped connection that runs SQLite calls inline on the event loop.

aiosqlite runs every call on a helper thread: each statement, BEGIN and COMMIT pays
a thread hop (hundreds of microseconds under load) for work that takes SQLite a
few microseconds. Tollway already serialises writers in-process
(:class:`tollway.db.Database`), so the only time an inline call can block is
while *another process* holds the write lock (bounded by ``busy_timeout``) and
during a commit's fsync. For the embedded single-process default that trade is
well worth it; ``TOLLWAY_SQLITE_DRIVER=thread`` restores aiosqlite's threads.

SQLAlchemy's aiosqlite dialect accepts any object with aiosqlite's interface
through ``create_async_engine(..., async_creator=...)``; this is that object.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# aiosqlite's error classes are sqlite3's, so the dialect's exception mapping holds.


class InlineCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        if parameters is None:
            self._cursor.execute(sql)
        else:
            self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> InlineCursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    def __aiter__(self) -> InlineCursor:
        return self

    async def __anext__(self) -> Any:
        row = self._cursor.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class _ImmediateQueue:
    """Stands in for aiosqlite's work queue: runs the function now, resolves the future."""

    def put_nowait(self, item: tuple[asyncio.Future[Any], Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as error:
            future.set_exception(error)


class InlineConnection:
    def __init__(self, connection: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = connection
        self._tx = _ImmediateQueue()

    @property
    def _connection(self) -> sqlite3.Connection | None:
        return self._conn

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ValueError("no active connection")
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._require().isolation_level

    def cursor(self) -> InlineCursor:
        return InlineCursor(self._require().cursor())

    async def execute(self, sql: str, parameters: Sequence[Any] | None = None) -> InlineCursor:
        return await self.cursor().execute(sql, parameters)

    async def commit(self) -> None:
        # The one call that waits on the disk (fsync with synchronous=FULL): run it on a
        # helper thread so the event loop keeps serving requests meanwhile. The writer
        # lock is held until it returns, so nothing else touches this connection.
        await asyncio.to_thread(self._require().commit)

    async def rollback(self) -> None:
        self._require().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._require().create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def stop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def inline_creator(path: str, *, timeout: float) -> Callable[[], Any]:
    """An ``async_creator`` for ``create_async_engine`` opening ``path`` inline."""

    async def create() -> InlineConnection:
        # check_same_thread=False: the pool may hand the connection to another task,
        # never to another thread, but sqlite3 cannot tell the difference.
        return InlineConnection(
            sqlite3.connect(path, timeout=timeout, check_same_thread=False, isolation_level=None)
        )

    return create
