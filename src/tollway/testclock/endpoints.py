from __future__ import annotations

from tollway.auth.dependencies import AdminPrincipal
from tollway.kit.routing import ClockDep, DatabaseDep, SettingsDep, api_router
from tollway.kit.sweeps import SweepContext
from tollway.testclock.schemas import ClockAdvance, ClockState
from tollway.testclock.service import clock_service

router = api_router(prefix="/api/v1/admin/clock", tags=["admin"])


@router.post("/advance")
async def advance_clock(
    body: ClockAdvance,
    _admin: AdminPrincipal,
    database: DatabaseDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> ClockState:
    """Move the sandbox's business time forward (sandbox provider only; 404 otherwise).

    Renewals, dunning retries and grace ends due on the way run at their own moments,
    and the provider events they cause are processed, before the answer. The offset
    is stored, so every process and a restart see the same time.
    """
    # No request session here: each billing step commits in its own transaction.
    result = await clock_service.advance(
        SweepContext(database=database, clock=clock, settings=settings), seconds=body.seconds
    )
    return ClockState(now=result.now, offset_seconds=result.offset_seconds, handled=result.handled)
