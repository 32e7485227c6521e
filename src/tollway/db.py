"""Engines and transaction scopes.

The edge owns the transaction: the request route (:mod:`tollway.kit.routing`), a
sweep (:mod:`tollway.kit.sweeps`) or a CLI command opens one with
:meth:`Database.transaction`, which commits when the block succeeds and rolls back
when it raises. Services only ``flush()``.

SQLite has one writer at a time. Write transactions begin with ``BEGIN IMMEDIATE``
(so a transaction never fails half-way when it upgrades from reading to writing) and
queue on an in-process lock first, so coroutines wait in order instead of polling
SQLite's busy handler; other processes on the same file wait in ``busy_timeout``.
Never open a second write transaction while holding one: it would wait for itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from tollway.config import Settings
from tollway.kit.sqlite_inline import inline_creator

SQLITE_BUSY_TIMEOUT_MS = 10_000


class TollwaySession(Session):
    """The synchronous session under every AsyncSession; audit sealing hooks into it."""


def sqlite_path(database_url: str) -> Path | None:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def create_engine(settings: Settings) -> AsyncEngine:
    if settings.is_sqlite:
        path = sqlite_path(settings.database_url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        options: dict[str, Any] = {}
        if settings.sqlite_driver == "inline" and path is not None:
            options["async_creator"] = inline_creator(
                str(path), timeout=SQLITE_BUSY_TIMEOUT_MS / 1000
            )
        else:
            options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        engine = create_async_engine(
            settings.database_url,
            echo=settings.database_echo,
            pool_size=settings.database_pool_size,
            max_overflow=0,
            **options,
        )
        _configure_sqlite(engine, settings)
        return engine
    return create_async_engine(
        settings.database_url,
        echo=settings.database_echo,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_size,
        pool_pre_ping=True,
    )


def _configure_sqlite(engine: AsyncEngine, settings: Settings) -> None:
    synchronous = settings.sqlite_synchronous.upper()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the driver so that BEGIN is ours
        # (SQLAlchemy's documented recipe for pysqlite/aiosqlite).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine per process, with read and write transaction scopes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(settings)
        self.is_sqlite = settings.is_sqlite
        self.dialect = self.engine.dialect.name
        write_engine = (
            self.engine.execution_options(sqlite_begin="IMMEDIATE")
            if self.is_sqlite
            else self.engine
        )
        self._read_sessions = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=TollwaySession
        )
        self._write_sessions = async_sessionmaker(
            write_engine, expire_on_commit=False, sync_session_class=TollwaySession
        )
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    def transaction(self, *, write: bool = True) -> Transaction:
        """A transaction scope: ``async with db.transaction() as session: ...``.

        The block's work commits when it ends and rolls back if it raises.
        ``write=False`` opens a read-only scope that never takes the writer lock.
        """
        return Transaction(self, write=write)

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


class Transaction:
    """One database transaction, begun lazily, committed or rolled back exactly once."""

    def __init__(self, database: Database, *, write: bool) -> None:
        self._database = database
        self.write = write
        self._session: AsyncSession | None = None
        self._holds_lock = False

    @property
    def started(self) -> bool:
        return self._session is not None

    async def begin(self) -> AsyncSession:
        """The transaction's session, opening it (and taking the writer lock) on first use."""
        if self._session is None:
            lock = self._database._write_lock if self.write else None
            if lock is not None:
                await lock.acquire()
                self._holds_lock = True
            factory = (
                self._database._write_sessions if self.write else self._database._read_sessions
            )
            self._session = factory()
        return self._session

    async def commit(self) -> None:
        if self._session is None:
            return
        try:
            await self._session.commit()
        except BaseException:
            await self.rollback()
            raise
        await self._close()

    async def rollback(self) -> None:
        if self._session is None:
            return
        try:
            await self._session.rollback()
        finally:
            await self._close()

    async def _close(self) -> None:
        session, self._session = self._session, None
        try:
            if session is not None:
                await session.close()
        finally:
            if self._holds_lock:
                self._holds_lock = False
                lock = self._database._write_lock
                assert lock is not None
                lock.release()

    async def __aenter__(self) -> AsyncSession:
        return await self.begin()

    async def __aexit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        if exc_type is None:
            await self.commit()
        else:
            await self.rollback()
