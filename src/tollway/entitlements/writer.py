"""Group commit: decisions from many concurrent requests share one transaction.

Each authorize decision writes a little (a usage event, a counter bump) and must not
be answered before those writes are durable. Committing each one alone would make
SQLite's single writer (and an fsync per commit) the limit. Instead a request hands
its unit of work to :class:`GroupCommitter` and waits; one drain task runs all the
units queued meanwhile in one transaction, commits once, and only then wakes every
waiter with its own result. Nothing is answered early and nothing is dropped.

Units come in two kinds: a callable run with the shared session, or an item for a
*batch handler* that takes all the items of the round at once (the metering of many
decisions with a handful of statements). A unit that raises must not sink its
neighbours: when a round fails it is rolled back and every unit in it runs again in
a transaction of its own, so each caller gets exactly its own result or error.
Units are therefore re-runnable: they touch the database only through the session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.db import Database
from tollway.errors import TollwayError

log = structlog.get_logger("tollway.entitlements.writer")

T = TypeVar("T")
Work = Callable[[AsyncSession], Awaitable[Any]]
#: Takes the items of one round, returns one result per item, in order.
BatchHandler = Callable[[AsyncSession, list[Any]], Awaitable[list[Any]]]

#: Most units in one transaction: large enough to amortise the commit, small enough
#: that the first waiter of a round is not kept long.
MAX_BATCH = 256


@dataclass(frozen=True, slots=True)
class _Kept:
    error: TollwayError


@dataclass(slots=True)
class _Unit:
    future: asyncio.Future[Any]
    work: Work | None = None
    handler: BatchHandler | None = None
    item: Any = None


class GroupCommitter:
    def __init__(self, database: Database, *, max_batch: int = MAX_BATCH) -> None:
        self.database = database
        self.max_batch = max_batch
        self._queue: list[_Unit] = []
        self._drainer: asyncio.Task[None] | None = None

    async def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run ``work`` in a shared transaction; return its result once that committed."""
        result: T = await self._enqueue(_Unit(future=self._future(), work=work))
        return result

    async def run_keeping_errors(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """:meth:`run` for work whose errors may ask for their writes to be kept
        (``TollwayError.commit_transaction``, e.g. a refused spend that counts towards the
        abuse battery): such an error commits with the round, then is raised here, as the
        request edge does for a request's own transaction."""

        async def keeping(session: AsyncSession) -> T | _Kept:
            try:
                return await work(session)
            except TollwayError as error:
                if error.commit_transaction:
                    return _Kept(error)
                raise

        result = await self.run(keeping)
        if isinstance(result, _Kept):
            raise result.error
        return result

    async def run_batched(self, handler: BatchHandler, item: Any) -> Any:
        """Give ``item`` to ``handler`` with the other items of the round; return its
        result once the round's transaction committed."""
        return await self._enqueue(_Unit(future=self._future(), handler=handler, item=item))

    @staticmethod
    def _future() -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _enqueue(self, unit: _Unit) -> Any:
        self._queue.append(unit)
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(
                self._drain(), name="tollway-group-commit"
            )
        return await unit.future

    async def _drain(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                await self._run_batch(batch)
            except BaseException as error:
                # Cancelled (shutdown) or worse: nobody may wait forever.
                for unit in batch + self._queue:
                    if not unit.future.done():
                        unit.future.set_exception(error)
                self._queue.clear()
                raise

    async def _run_batch(self, batch: list[_Unit]) -> None:
        results: list[tuple[_Unit, Any]] = []
        try:
            async with self.database.transaction() as session:
                handlers: dict[BatchHandler, list[_Unit]] = {}
                for unit in batch:
                    if unit.handler is not None:
                        handlers.setdefault(unit.handler, []).append(unit)
                for handler, units in handlers.items():
                    answers = await handler(session, [unit.item for unit in units])
                    results.extend(zip(units, answers, strict=True))
                for unit in batch:
                    if unit.work is not None:
                        results.append((unit, await unit.work(session)))
        except Exception as error:
            if len(batch) == 1:
                # The caller re-raises it: an expected 4xx or a real failure to log there.
                if not batch[0].future.done():
                    batch[0].future.set_exception(error)
                return
            log.debug("group_commit.split", size=len(batch), error=type(error).__name__)
            for unit in batch:
                await self._run_batch([unit])
            return
        for unit, result in results:
            if not unit.future.done():
                unit.future.set_result(result)
