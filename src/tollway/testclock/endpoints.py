from __future__ import annotations

from fastapi import Request
from fastapi.routing import APIRoute

from tollway.auth.dependencies import AdminPrincipal
from tollway.config import Settings
from tollway.db import Database
from tollway.kit.clock import Clock
from tollway.kit.routing import ClockDep, DatabaseDep, SettingsDep, api_router
from tollway.kit.sweeps import SweepContext
from tollway.testclock.schemas import ClockAdvanceIn, ClockStateOut
from tollway.testclock.service import clock_service

router = api_router(prefix="/api/v1/admin/clock", tags=["admin"])


async def advance_clock(
    body: ClockAdvanceIn,
    admin: AdminPrincipal,
    request: Request,
    database: DatabaseDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> ClockStateOut:
    """Move the sandbox's business time forward (sandbox provider only; 404 otherwise).

    Renewals, dunning retries and grace ends due on the way run at their own moments,
    and the provider events they cause are processed, before the answer. The offset
    is stored, so every process and a restart see the same time. `Idempotency-Key` is
    ignored: a retry moves the clock again.
    """
    # No request session here: each billing step commits in its own transaction.
    result = await clock_service.advance(
        _context(request, database, clock, settings), seconds=body.seconds, actor=admin.actor
    )
    return ClockStateOut(
        now=result.now, offset_seconds=result.offset_seconds, handled=result.handled
    )


async def reset_clock(
    admin: AdminPrincipal,
    request: Request,
    database: DatabaseDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> ClockStateOut:
    """Put the sandbox's business time back to real time (offset 0; sandbox provider
    only, 404 otherwise). Every process follows within a second. Nothing billed on the
    way is undone. Audited as `testclock.reset`, as each advance is as
    `testclock.advanced`. `Idempotency-Key` is ignored (a reset is the same twice)."""
    result = await clock_service.reset(
        _context(request, database, clock, settings), actor=admin.actor
    )
    return ClockStateOut(
        now=result.now, offset_seconds=result.offset_seconds, handled=result.handled
    )


# Each billing step of a move commits in its own transaction; a request transaction
# around them (which an Idempotency-Key claim opens) would hold SQLite's writer while
# they wait for it. So these are plain routes, without the request transaction.
for _path, _endpoint in (("/advance", advance_clock), ("/reset", reset_clock)):
    router.add_api_route(
        _path,
        _endpoint,
        methods=["POST"],
        response_model=ClockStateOut,
        route_class_override=APIRoute,
    )


def _context(
    request: Request, database: Database, clock: Clock, settings: Settings
) -> SweepContext:
    return SweepContext(
        database=database,
        clock=clock,
        settings=settings,
        wall_clock=request.app.state.wall_clock,
    )
