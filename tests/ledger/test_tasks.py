"""Sweeps: holds past their TTL are released, lots past expiry lapse, across restarts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.ledger.conftest import assert_books_balance
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.sweeps import SweepContext, run_all_once
from tollway.ledger import tasks
from tollway.ledger.models import ReservationStatus
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service
from tollway.ledger.service.transfers import transfer_service


def context_of(app: FastAPI) -> SweepContext:
    return SweepContext(
        database=app.state.database, clock=app.state.clock, settings=app.state.settings
    )


class TestHoldSweep:
    async def test_a_hold_left_open_across_a_restart_is_released_after_its_ttl(
        self,
        app_factory: Callable[..., FastAPI],
        clock: ManualClock,
        organization_id: str,
        database: Database,
    ) -> None:
        async with database.transaction() as session:
            await grant_service.grant(
                session,
                organization_id=organization_id,
                amount=10,
                source="admin",
                now=clock.now(),
                reason="t",
            )
            held = await hold_service.reserve(
                session, organization_id=organization_id, amount=4, now=clock.now()
            )
        # A new process on the same database: nothing of the first one survives but rows.
        restarted = app_factory()
        async with LifespanManager(restarted):
            context = context_of(restarted)
            clock.advance(29)
            assert await tasks.release_expired_holds(context) == 0
            clock.advance(1)
            assert await tasks.release_expired_holds(context) == 1
            assert await tasks.release_expired_holds(context) == 0
            async with restarted.state.database.transaction(write=False) as session:
                reservation = await hold_service.get_reservation(
                    session, organization_id=organization_id, reservation_id=held.id
                )
                balance = await transfer_service.balance(
                    session, organization_id=organization_id, now=clock.now()
                )
        assert reservation.status == ReservationStatus.EXPIRED
        assert (balance.reserved, balance.available) == (0, 10)
        await assert_books_balance(database, organization_id)


class TestExpirySweep:
    async def test_lapsed_lots_are_booked_once_by_the_worker(
        self, app: FastAPI, clock: ManualClock, organization_id: str, database: Database
    ) -> None:
        async with database.transaction() as session:
            await grant_service.grant(
                session,
                organization_id=organization_id,
                amount=10,
                source="promo",
                now=clock.now(),
                expires_at=clock.now() + timedelta(days=1),
                reason="t",
            )
        clock.advance(days=1)
        first = await run_all_once(context_of(app))
        second = await run_all_once(context_of(app))
        assert first["ledger.expire_grants"] == 1
        assert second["ledger.expire_grants"] == 0
        books = await assert_books_balance(database, organization_id)
        assert (books["wallet"], books["expiry"]) == (0, 10)
