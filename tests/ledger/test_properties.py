"""Property: random grant / reserve / commit / release / expire / clock sequences keep
the books right, checked against a small independent model of the ledger."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ledger.conftest import MakeOrganization, assert_books_balance
from tollway.config import Settings
from tollway.db import Database
from tollway.errors import TollwayError
from tollway.kit.clock import ManualClock
from tollway.kit.sweeps import SweepContext
from tollway.ledger import tasks
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service
from tollway.ledger.service.transfers import transfer_service


@dataclass
class Lot:
    id: str
    remaining: int
    expires_at: datetime | None
    priority: int
    seq: int
    swept: bool = False

    def live(self, now: datetime) -> bool:
        return not self.swept and (self.expires_at is None or self.expires_at > now)


@dataclass
class Hold:
    id: str
    amount: int
    lots: list[tuple[str, int]]
    expires_at: datetime
    status: str = "held"
    committed: int = 0


@dataclass
class Model:
    lots: list[Lot] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    granted: int = 0
    spent: int = 0
    expired: int = 0

    def lot(self, lot_id: str) -> Lot:
        return next(lot for lot in self.lots if lot.id == lot_id)

    def spending_order(self, now: datetime) -> list[Lot]:
        live = [lot for lot in self.lots if lot.live(now) and lot.remaining > 0]
        return sorted(
            live,
            key=lambda lot: (lot.priority, lot.expires_at is None, lot.expires_at or now, lot.seq),
        )

    def available(self, now: datetime) -> int:
        return sum(lot.remaining for lot in self.lots if lot.live(now))

    def reserved(self) -> int:
        return sum(hold.amount for hold in self.holds if hold.status == "held")

    def give_back(self, hold: Hold, amount: int) -> None:
        for lot_id, taken in reversed(hold.lots):
            back = min(amount, taken)
            amount -= back
            lot = self.lot(lot_id)
            if lot.swept:
                self.expired += back
            else:
                lot.remaining += back
            if amount == 0:
                return


T = TypeVar("T")


async def outcome(work: Awaitable[T]) -> T | TollwayError:
    """The result, or the expected error (its transaction still ends normally)."""
    try:
        return await work
    except TollwayError as error:
        return error


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("grant"),
            st.integers(1, 40),
            st.one_of(st.none(), st.integers(1, 300)),
            st.integers(0, 2),
        ),
        st.tuples(st.just("reserve"), st.integers(1, 25), st.integers(1, 120)),
        st.tuples(st.just("commit"), st.integers(0, 50), st.fractions(0, 1)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("advance"), st.integers(0, 200)),
        st.tuples(st.just("sweep")),
    ),
    min_size=1,
    max_size=30,
)


class TestLedgerProperties:
    @settings(
        max_examples=40,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(steps=operations)
    async def test_random_sequences_keep_the_books_right(
        self,
        database: Database,
        clock: ManualClock,
        settings: Settings,
        make_organization: MakeOrganization,
        steps: list[tuple[object, ...]],
    ) -> None:
        organization_id = await make_organization()
        context = SweepContext(database=database, clock=clock, settings=settings)
        model = Model()

        async def sweep() -> None:
            now = clock.now()
            # Same order as the worker: ledger.expire_grants, then release_expired_holds.
            for lot in model.lots:
                if not lot.swept and lot.expires_at is not None and lot.expires_at <= now:
                    model.expired += lot.remaining
                    lot.remaining = 0
                    lot.swept = True
            for hold in model.holds:
                if hold.status == "held" and hold.expires_at <= now:
                    model.give_back(hold, hold.amount)
                    hold.status = "expired"
            await tasks.expire_grants(context)
            await tasks.release_expired_holds(context)

        for step in steps:
            now = clock.now()
            match step:
                case ("grant", int(amount), expires_in, int(priority)):
                    clock.advance(0.001)  # distinct creation times keep "oldest first" exact
                    now = clock.now()
                    expires_at = (
                        now + timedelta(seconds=expires_in) if isinstance(expires_in, int) else None
                    )
                    async with database.transaction() as session:
                        created = await grant_service.grant(
                            session,
                            organization_id=organization_id,
                            amount=amount,
                            source="promo",
                            now=now,
                            expires_at=expires_at,
                            priority=priority,
                            reason="property",
                        )
                    model.lots.append(
                        Lot(created.id, amount, expires_at, priority, len(model.lots))
                    )
                    model.granted += amount
                case ("reserve", int(amount), int(ttl)):
                    expected_ok = model.available(now) >= amount
                    async with database.transaction() as session:
                        held = await outcome(
                            hold_service.reserve(
                                session,
                                organization_id=organization_id,
                                amount=amount,
                                now=now,
                                ttl_seconds=ttl,
                            )
                        )
                    if isinstance(held, TollwayError):
                        assert not expected_ok
                        assert held.code == "insufficient_credits"
                        continue
                    assert expected_ok
                    taken: list[tuple[str, int]] = []
                    needed = amount
                    for lot in model.spending_order(now):
                        take = min(needed, lot.remaining)
                        lot.remaining -= take
                        taken.append((lot.id, take))
                        needed -= take
                        if needed == 0:
                            break
                    assert [list(pair) for pair in taken] == held.allocations["lots"]
                    model.holds.append(Hold(held.id, amount, taken, now + timedelta(seconds=ttl)))
                case ("commit", int(index), fraction) if model.holds:
                    hold = model.holds[index % len(model.holds)]
                    amount = int(hold.amount * Fraction(str(fraction)))
                    async with database.transaction() as session:
                        result = await outcome(
                            hold_service.commit(
                                session,
                                organization_id=organization_id,
                                reservation_id=hold.id,
                                now=now,
                                amount=amount,
                            )
                        )
                    if isinstance(result, TollwayError):
                        assert result.code == "hold_not_active"
                        assert hold.status != "held" or hold.expires_at <= now
                        assert not (hold.status == "committed" and hold.committed == amount)
                        continue
                    if hold.status == "committed":
                        assert result.committed == hold.committed == amount
                        continue
                    assert hold.status == "held"
                    assert hold.expires_at > now
                    model.give_back(hold, hold.amount - amount)
                    model.spent += amount
                    hold.status, hold.committed = "committed", amount
                    assert (result.committed, result.released) == (amount, hold.amount - amount)
                case ("release", int(index)) if model.holds:
                    hold = model.holds[index % len(model.holds)]
                    async with database.transaction() as session:
                        released = await outcome(
                            hold_service.release(
                                session,
                                organization_id=organization_id,
                                reservation_id=hold.id,
                                now=now,
                            )
                        )
                    if isinstance(released, TollwayError):
                        assert released.code == "hold_not_active"
                        assert hold.status == "committed"
                        continue
                    if hold.status == "held":
                        model.give_back(hold, hold.amount)
                        hold.status = "released"
                case ("advance", int(seconds)):
                    clock.advance(seconds)
                case ("sweep",):
                    await sweep()
            async with database.transaction(write=False) as session:
                figures = await transfer_service.balance(
                    session, organization_id=organization_id, now=clock.now()
                )
            assert figures.available >= 0
            assert figures.available == model.available(clock.now())
            assert figures.reserved == model.reserved()
            assert figures.balance == figures.available + figures.reserved

        clock.advance(1000)
        await sweep()
        books = await assert_books_balance(database, organization_id)
        async with database.transaction(write=False) as session:
            figures = await transfer_service.balance(
                session, organization_id=organization_id, now=clock.now()
            )
        granted = -(books["issuance"] + books["purchases"])
        assert (granted, books["spending"], books["expiry"]) == (
            model.granted,
            model.spent,
            model.expired,
        )
        assert figures.balance == granted - books["spending"] - books["expiry"]
        assert figures.reserved == 0
