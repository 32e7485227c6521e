"""Group commit: decisions from many concurrent requests share one transaction.

Each authorize decision writes a little (a usage event, a counter bump) and must not
be answered before those writes are durable. Committing each one alone would make
SQLite's single writer (and an fsync per commit) the limit. Instead a request hands
its unit of work to :class:`GroupCommitter` and waits; one drain task runs all the
units queued meanwhile in one transaction, commits once, and only then wakes every
waiter with its own result. Nothing is answered early and nothing is dropped.

A unit that raises must not sink its neighbours: when a batch fails, it is rolled
back and every unit in it is run again in a transaction of its own, so each caller
gets exactly its own result or error. Units are therefore written to be re-runnable
(they only touch the database through the session they are given).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.db import Database

log = structlog.get_logger("tollway.entitlements.writer")

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[Any]]

#: Most units in one transaction: large enough to amortise the commit, small enough
#: that the first waiter in a batch is not kept long.
MAX_BATCH = 256


class GroupCommitter:
    def __init__(self, database: Database, *, max_batch: int = MAX_BATCH) -> None:
        self.database = database
        self.max_batch = max_batch
        self._queue: list[tuple[Work, asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in a shared transaction; return its result once that committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.append((work, future))
        if self._drainer is None or self._drainer.done():
            self._drainer = loop.create_task(self._drain(), name="tollway-group-commit")
        return await future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                await self._run_batch(batch)
            except BaseException as error:
                # Cancelled (shutdown) or worse: nobody may wait forever.
                for _work, future in batch + self._queue:
                    if not future.done():
                        future.set_exception(error)
                self._queue.clear()
                raise

    async def _run_batch(self, batch: list[tuple[Work, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        try:
            async with self.database.transaction() as session:
                for work, _future in batch:
                    results.append(await work(session))
        except Exception as error:
            if len(batch) == 1:
                # The caller re-raises it: an expected 4xx or a real failure to log there.
                _work, future = batch[0]
                if not future.done():
                    future.set_exception(error)
                return
            log.debug("group_commit.split", size=len(batch), error=type(error).__name__)
            for item in batch:
                await self._run_batch([item])
            return
        for (_work, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
