"""Background sweeps: state-driven, idempotent jobs run by ``tollway worker``.

A sweep finds due rows (periods ended, holds expired, deliveries due) and acts on
each in its own transaction; running it twice changes nothing the second time.
Domains register sweeps with :func:`register_sweep`. On PostgreSQL a sweep claims
rows with :func:`claim_due` (``FOR UPDATE SKIP LOCKED``) so that several workers
never take the same row; on SQLite writers are serialised anyway.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import Select

from tollway.config import Settings
from tollway.db import Database
from tollway.kit.clock import Clock

log = structlog.get_logger("tollway.sweeps")


@dataclass(frozen=True, slots=True)
class SweepContext:
    database: Database
    #: Business time: periods, renewals, dunning, grace, hold and grant expiry.
    clock: Clock
    settings: Settings
    #: Security time (token, session, lock-out and invitation expiry), when it is kept
    #: apart from business time (the app's wall clock); ``clock`` otherwise.
    wall_clock: Clock | None = None

    @property
    def wall(self) -> Clock:
        return self.wall_clock or self.clock


#: A sweep does one round of work and returns how many items it handled.
SweepFunction = Callable[[SweepContext], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Sweep:
    name: str
    run: SweepFunction
    interval_seconds: float


_SWEEPS: dict[str, Sweep] = {}


def register_sweep(
    name: str, *, interval_seconds: float = 1.0
) -> Callable[[SweepFunction], SweepFunction]:
    """Decorator: make ``fn`` one of the sweeps the worker runs every ``interval_seconds``."""

    def decorator(fn: SweepFunction) -> SweepFunction:
        _SWEEPS[name] = Sweep(name=name, run=fn, interval_seconds=interval_seconds)
        return fn

    return decorator


def registered_sweeps() -> list[Sweep]:
    return sorted(_SWEEPS.values(), key=lambda sweep: sweep.name)


def claim_due(statement: Select[Any], database: Database) -> Select[Any]:
    """Lock the selected rows for this transaction, skipping rows another worker holds."""
    if database.is_sqlite:
        return statement
    return statement.with_for_update(skip_locked=True)


async def run_all_once(context: SweepContext) -> dict[str, int]:
    """Run every registered sweep once (used by tests and ``tollway billing run``)."""
    handled: dict[str, int] = {}
    for sweep in registered_sweeps():
        handled[sweep.name] = await sweep.run(context)
    return handled


class Sweeper:
    """Runs the registered sweeps on their intervals until stopped."""

    def __init__(self, context: SweepContext) -> None:
        self.context = context
        self._stopping = asyncio.Event()
        self._last_run: dict[str, float] = {}

    def stop(self) -> None:
        self._stopping.set()

    async def run_forever(self) -> None:
        log.info("sweeper.started", sweeps=[sweep.name for sweep in registered_sweeps()])
        while not self._stopping.is_set():
            await self.tick()
            try:
                await asyncio.wait_for(
                    self._stopping.wait(), timeout=self.context.settings.sweep_interval_seconds
                )
            except TimeoutError:
                continue
        log.info("sweeper.stopped")

    async def tick(self) -> None:
        for sweep in registered_sweeps():
            now = time.monotonic()
            last = self._last_run.get(sweep.name)
            if last is not None and now - last < sweep.interval_seconds:
                continue
            self._last_run[sweep.name] = now
            try:
                handled = await sweep.run(self.context)
            except Exception:
                # One failing sweep must not stop the others; it is retried next round.
                log.exception("sweep.failed", sweep=sweep.name)
                continue
            if handled:
                log.info("sweep.ran", sweep=sweep.name, handled=handled)
