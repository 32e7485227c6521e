"""The sandbox test clock (Stripe and Kill Bill test clocks do the same).

``advance`` moves business time forward and runs the billing sweeps at every due
moment on the way (a period end, a dunning retry, a grace end), so a month advanced
in one call bills exactly as a month lived through would. ``reset`` puts business
time back on the wall clock (offset 0). Only the sandbox provider allows either: real
money never runs on a shifted clock. Each move is an audit entry (``testclock.advanced``,
``testclock.reset``) naming who made it.

Only business time moves. Security time (token, session, lock-out and license token
expiry) is the wall clock's (``SweepContext.wall``, ``app.state.wall_clock``), so moving
the test clock logs nobody out and stamps no token in the future.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.billing.tasks import next_due_at, run_until_quiet
from tollway.db import Database
from tollway.errors import NotFound, Unprocessable
from tollway.kit.clock import Clock, ManualClock, SystemClock
from tollway.kit.sweeps import SweepContext
from tollway.testclock.models import ClockOffset

log = structlog.get_logger("tollway.testclock")

ROW_ID = 1
MAX_ADVANCE_SECONDS = 10 * 366 * 86400


@dataclass(frozen=True, slots=True)
class AdvanceResult:
    now: datetime
    offset_seconds: float
    handled: int


class ClockService:
    async def load_offset(self, database: Database) -> int:
        async with database.transaction(write=False) as session:
            row = await session.get(ClockOffset, ROW_ID)
            return row.offset_microseconds if row is not None else 0

    async def restore(self, database: Database, clock: Clock) -> None:
        """Apply the stored offset to a wall clock (at start-up and periodically)."""
        if isinstance(clock, SystemClock):
            clock.offset = timedelta(microseconds=await self.load_offset(database))

    async def follow(self, database: Database, clock: Clock, *, interval_seconds: float) -> None:
        """Keep a process's clock on the stored offset until cancelled."""
        while True:
            try:
                await self.restore(database, clock)
            except (OSError, SQLAlchemyError):
                log.warning("testclock.reload_failed", exc_info=True)
            await asyncio.sleep(interval_seconds)

    async def advance(
        self, context: SweepContext, *, seconds: int, actor: str | None = None
    ) -> AdvanceResult:
        """Move business time ``seconds`` ahead, running billing at each due moment;
        audited as ``testclock.advanced`` by ``actor``."""
        self._check_sandbox(context)
        if not 0 <= seconds <= MAX_ADVANCE_SECONDS:
            raise Unprocessable(
                f"seconds must be between 0 and {MAX_ADVANCE_SECONDS}", code="invalid_clock_advance"
            )
        result = await self.advance_to(context, context.clock.now() + timedelta(seconds=seconds))
        async with context.database.transaction() as session:
            audit_service.record(
                session,
                action="testclock.advanced",
                target="clock",
                actor=actor,
                details={
                    "seconds": seconds,
                    "now": result.now.isoformat(),
                    "offset_seconds": result.offset_seconds,
                    "handled": result.handled,
                },
            )
        return result

    async def reset(self, context: SweepContext, *, actor: str | None = None) -> AdvanceResult:
        """Put business time back on the wall clock (offset 0) in every process (they
        follow the stored offset within a second); audited as ``testclock.reset``.

        Nothing is undone: what billing did on the way stays, and what is due again runs
        when business time reaches it anew."""
        self._check_sandbox(context)
        clock = context.clock
        if isinstance(clock, ManualClock):
            clock.set(context.wall.now())
        elif isinstance(clock, SystemClock):
            clock.offset = timedelta(0)
        else:
            raise NotFound("this clock cannot be moved")
        async with context.database.transaction() as session:
            row = await self._locked_row(session)
            before = row.offset_microseconds
            row.offset_microseconds = 0
            row.updated_at = clock.now()
            audit_service.record(
                session,
                action="testclock.reset",
                target="clock",
                actor=actor,
                details={
                    "now": clock.now().isoformat(),
                    "offset_seconds_before": before / 1_000_000,
                },
            )
            await session.flush()
        return AdvanceResult(now=clock.now(), offset_seconds=0, handled=0)

    def _check_sandbox(self, context: SweepContext) -> None:
        if context.settings.payment_provider != "sandbox":
            raise NotFound("the test clock exists only with the sandbox provider")

    async def _locked_row(self, session: AsyncSession) -> ClockOffset:
        row = (
            await session.execute(
                select(ClockOffset).where(ClockOffset.id == ROW_ID).with_for_update()
            )
        ).scalar_one_or_none()
        if row is None:
            row = ClockOffset(id=ROW_ID, offset_microseconds=0)
            session.add(row)
        return row

    async def advance_to(self, context: SweepContext, target: datetime) -> AdvanceResult:
        clock = context.clock
        handled = await run_until_quiet(context)
        while True:
            # Whatever is still due now failed (and was logged); it is tried again at
            # each later moment, but never holds time back.
            due = await next_due_at(context, after=clock.now())
            if due is None or due > target:
                break
            await self._shift(context, due - clock.now())
            handled += await run_until_quiet(context)
        if target > clock.now():
            await self._shift(context, target - clock.now())
            handled += await run_until_quiet(context)
        offset = await self.load_offset(context.database)
        return AdvanceResult(now=clock.now(), offset_seconds=offset / 1_000_000, handled=handled)

    async def _shift(self, context: SweepContext, delta: timedelta) -> None:
        clock = context.clock
        if isinstance(clock, ManualClock):
            clock.advance(seconds=delta.total_seconds())
        elif isinstance(clock, SystemClock):
            clock.offset += delta
        else:
            raise NotFound("this clock cannot be moved")
        async with context.database.transaction() as session:
            row = await self._locked_row(session)
            row.offset_microseconds += delta // timedelta(microseconds=1)
            row.updated_at = clock.now()
            await session.flush()
            if isinstance(clock, SystemClock):
                # The stored figure is the truth other processes follow.
                clock.offset = timedelta(microseconds=row.offset_microseconds)


clock_service = ClockService()
