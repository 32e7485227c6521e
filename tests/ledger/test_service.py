"""The ledger service: grants, spending order, holds, expiry, reversal, events, audit."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from tests.ledger.conftest import MakeOrganization, assert_books_balance
from tollway.audit.models import AuditEntry
from tollway.db import Database
from tollway.errors import TollwayError
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams
from tollway.ledger.models import CreditAccount, CreditTransfer, ReservationStatus
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service
from tollway.ledger.service.transfers import Balance, LedgerImbalance, transfer_service


async def grant(
    database: Database,
    clock: ManualClock,
    organization_id: str,
    amount: int,
    *,
    source: str = "admin",
    expires_in: timedelta | None = None,
    priority: int | None = None,
    reference: str | None = None,
) -> str:
    async with database.transaction() as session:
        created = await grant_service.grant(
            session,
            organization_id=organization_id,
            amount=amount,
            source=source,
            now=clock.now(),
            expires_at=clock.now() + expires_in if expires_in else None,
            priority=priority,
            reason="test",
            reference=reference,
        )
        return created.id


async def balance(database: Database, clock: ManualClock, organization_id: str) -> Balance:
    async with database.transaction(write=False) as session:
        return await transfer_service.balance(
            session, organization_id=organization_id, now=clock.now()
        )


async def reserve(
    database: Database, clock: ManualClock, organization_id: str, amount: int, **kwargs: Any
) -> str:
    async with database.transaction() as session:
        reservation = await hold_service.reserve(
            session,
            organization_id=organization_id,
            amount=amount,
            now=clock.now(),
            **kwargs,
        )
        return reservation.id


async def error_of(work: Awaitable[object]) -> TollwayError:
    with pytest.raises(TollwayError) as raised:
        await work
    return raised.value


class TestGrants:
    async def test_a_grant_raises_balance_and_available(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 100)
        figures = await balance(database, clock, organization_id)
        assert (figures.balance, figures.reserved, figures.available) == (100, 0, 100)
        books = await assert_books_balance(database, organization_id)
        assert books == {**books, "wallet": 100, "issuance": -100}

    async def test_a_purchase_comes_from_the_purchases_account(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 500, source="purchase", reference="ord_1")
        books = await assert_books_balance(database, organization_id)
        assert books["purchases"] == -500

    async def test_a_grant_with_the_same_reference_is_made_once(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        first = await grant(
            database, clock, organization_id, 500, source="purchase", reference="ord_2"
        )
        again = await grant(
            database, clock, organization_id, 500, source="purchase", reference="ord_2"
        )
        assert first == again
        assert (await balance(database, clock, organization_id)).balance == 500

    @pytest.mark.parametrize("amount", [0, -5])
    async def test_zero_or_negative_amounts_are_refused(
        self, database: Database, clock: ManualClock, organization_id: str, amount: int
    ) -> None:
        error = await error_of(grant(database, clock, organization_id, amount))
        assert (error.status, error.code) == (422, "invalid_amount")

    async def test_an_unknown_source_is_refused(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        error = await error_of(grant(database, clock, organization_id, 5, source="gift"))
        assert error.code == "invalid_grant_source"

    async def test_an_unknown_organization_is_a_404(
        self, database: Database, clock: ManualClock
    ) -> None:
        error = await error_of(grant(database, clock, "org_01JD8X3N5Q8W6Y2ZB4C7D9E0F1", 5))
        assert (error.status, error.code) == (404, "organization_not_found")

    async def test_every_transfer_writes_an_audit_entry_in_its_transaction(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 10)
        reservation_id = await reserve(database, clock, organization_id, 4)
        async with database.transaction() as session:
            await hold_service.commit(
                session,
                organization_id=organization_id,
                reservation_id=reservation_id,
                now=clock.now(),
            )
        async with database.transaction(write=False) as session:
            transfers = list((await session.execute(select(CreditTransfer))).scalars())
            audited = list(
                (
                    await session.execute(
                        select(AuditEntry).where(AuditEntry.action.like("credits.%"))
                    )
                ).scalars()
            )
        assert sorted(entry.target for entry in audited if entry.target) == sorted(
            transfer.id for transfer in transfers
        )
        assert {entry.action for entry in audited} == {
            "credits.grant",
            "credits.reserve",
            "credits.commit",
        }


class TestSpendingOrder:
    async def test_priority_then_earliest_expiry_then_oldest(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        paid = await grant(database, clock, organization_id, 5, source="purchase", reference="o")
        clock.advance(1)
        late = await grant(database, clock, organization_id, 5, expires_in=timedelta(days=9))
        clock.advance(1)
        soon = await grant(database, clock, organization_id, 5, expires_in=timedelta(days=2))
        clock.advance(1)
        old_forever = await grant(database, clock, organization_id, 5)
        clock.advance(1)
        new_forever = await grant(database, clock, organization_id, 5)
        allotment = await grant(database, clock, organization_id, 5, source="allotment")
        figures = await balance(database, clock, organization_id)
        assert [lot.id for lot in figures.grants] == [
            allotment,
            soon,
            late,
            old_forever,
            new_forever,
            paid,
        ]
        await reserve(database, clock, organization_id, 7)
        remaining = {
            lot.id: lot.remaining
            for lot in (await balance(database, clock, organization_id)).grants
        }
        assert allotment not in remaining
        assert remaining[soon] == 3
        assert remaining[paid] == 5

    async def test_an_explicit_priority_wins(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 5, source="allotment")
        first = await grant(
            database, clock, organization_id, 5, source="purchase", reference="p", priority=0
        )
        await reserve(database, clock, organization_id, 5)
        lots = (await balance(database, clock, organization_id)).grants
        assert first not in [lot.id for lot in lots]


class TestHolds:
    async def test_reserve_then_commit_less_returns_the_rest(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 50)
        reservation_id = await reserve(database, clock, organization_id, 10)
        held = await balance(database, clock, organization_id)
        assert (held.balance, held.reserved, held.available) == (50, 10, 40)
        async with database.transaction() as session:
            result = await hold_service.commit(
                session,
                organization_id=organization_id,
                reservation_id=reservation_id,
                now=clock.now(),
                amount=6,
            )
        assert (result.committed, result.released) == (6, 4)
        after = await balance(database, clock, organization_id)
        assert (after.balance, after.reserved, after.available) == (44, 0, 44)
        books = await assert_books_balance(database, organization_id)
        assert books["spending"] == 6

    async def test_release_returns_everything(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 20)
        reservation_id = await reserve(database, clock, organization_id, 8)
        async with database.transaction() as session:
            released = await hold_service.release(
                session,
                organization_id=organization_id,
                reservation_id=reservation_id,
                now=clock.now(),
            )
        assert released.status == ReservationStatus.RELEASED
        figures = await balance(database, clock, organization_id)
        assert (figures.balance, figures.reserved, figures.available) == (20, 0, 20)
        await assert_books_balance(database, organization_id)

    async def test_more_than_available_is_insufficient_credits(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 3)
        error = await error_of(reserve(database, clock, organization_id, 4))
        assert (error.status, error.code) == (402, "insufficient_credits")
        assert error.extra == {"requested": 4, "available": 3}

    async def test_a_ttl_outside_the_limits_is_refused(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 3)
        error = await error_of(
            reserve(database, clock, organization_id, 1, ttl_seconds=61, max_ttl_seconds=60)
        )
        assert error.code == "invalid_ttl"
        error = await error_of(reserve(database, clock, organization_id, 1, ttl_seconds=0))
        assert error.code == "invalid_ttl"

    @pytest.mark.parametrize(
        ("extra", "code"),
        [
            ({"idempotency_key": "k" * 256}, "invalid_idempotency_key"),
            ({"feature": "f" * 101}, "validation_error"),
            ({"subject": "s" * 101}, "validation_error"),
        ],
    )
    async def test_overlong_labels_are_refused_before_anything_is_written(
        self,
        database: Database,
        clock: ManualClock,
        organization_id: str,
        extra: dict[str, str],
        code: str,
    ) -> None:
        await grant(database, clock, organization_id, 3)
        error = await error_of(reserve(database, clock, organization_id, 1, **extra))
        assert (error.status, error.code) == (422, code)

    async def test_commit_above_the_hold_is_refused(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 20)
        reservation_id = await reserve(database, clock, organization_id, 5)
        async with database.transaction() as session:
            error = await error_of(
                hold_service.commit(
                    session,
                    organization_id=organization_id,
                    reservation_id=reservation_id,
                    now=clock.now(),
                    amount=6,
                )
            )
        assert (error.status, error.code) == (422, "amount_exceeds_hold")

    async def test_commit_of_a_released_hold_is_refused_and_release_of_a_committed_one_too(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 20)
        released_id = await reserve(database, clock, organization_id, 5)
        committed_id = await reserve(database, clock, organization_id, 5)
        async with database.transaction() as session:
            await hold_service.release(
                session,
                organization_id=organization_id,
                reservation_id=released_id,
                now=clock.now(),
            )
            await hold_service.commit(
                session,
                organization_id=organization_id,
                reservation_id=committed_id,
                now=clock.now(),
            )
        async with database.transaction() as session:
            error = await error_of(
                hold_service.commit(
                    session,
                    organization_id=organization_id,
                    reservation_id=released_id,
                    now=clock.now(),
                )
            )
            assert (error.status, error.code) == (409, "hold_not_active")
            error = await error_of(
                hold_service.release(
                    session,
                    organization_id=organization_id,
                    reservation_id=committed_id,
                    now=clock.now(),
                )
            )
            assert (error.status, error.code) == (409, "hold_not_active")

    async def test_commit_after_the_ttl_is_refused(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 20)
        reservation_id = await reserve(database, clock, organization_id, 5, ttl_seconds=30)
        clock.advance(30)
        async with database.transaction() as session:
            error = await error_of(
                hold_service.commit(
                    session,
                    organization_id=organization_id,
                    reservation_id=reservation_id,
                    now=clock.now(),
                )
            )
        assert error.code == "hold_not_active"

    async def test_another_organizations_hold_is_not_found(
        self, database: Database, clock: ManualClock, make_organization: MakeOrganization
    ) -> None:
        owner, stranger = await make_organization(), await make_organization()
        await grant(database, clock, owner, 20)
        reservation_id = await reserve(database, clock, owner, 5)
        async with database.transaction() as session:
            for work in (
                hold_service.commit(
                    session,
                    organization_id=stranger,
                    reservation_id=reservation_id,
                    now=clock.now(),
                ),
                hold_service.release(
                    session,
                    organization_id=stranger,
                    reservation_id=reservation_id,
                    now=clock.now(),
                ),
            ):
                error = await error_of(work)
                assert (error.status, error.code) == (404, "hold_not_found")

    async def test_retries_with_one_idempotency_key_reserve_once(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 20)
        first = await reserve(database, clock, organization_id, 5, idempotency_key="auth-1")
        again = await reserve(database, clock, organization_id, 5, idempotency_key="auth-1")
        assert first == again
        assert (await balance(database, clock, organization_id)).reserved == 5
        error = await error_of(
            reserve(database, clock, organization_id, 6, idempotency_key="auth-1")
        )
        assert error.code == "idempotency_conflict"

    async def test_commit_and_release_retries_move_credits_once(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 20)
        committed_id = await reserve(database, clock, organization_id, 5)
        released_id = await reserve(database, clock, organization_id, 5)
        for _ in range(2):
            async with database.transaction() as session:
                result = await hold_service.commit(
                    session,
                    organization_id=organization_id,
                    reservation_id=committed_id,
                    now=clock.now(),
                    amount=3,
                )
                assert (result.committed, result.released) == (3, 2)
                await hold_service.release(
                    session,
                    organization_id=organization_id,
                    reservation_id=released_id,
                    now=clock.now(),
                )
        figures = await balance(database, clock, organization_id)
        assert (figures.balance, figures.reserved) == (17, 0)
        await assert_books_balance(database, organization_id)

    async def test_release_open_holds_frees_every_hold(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 20)
        for amount in (2, 3, 4):
            await reserve(database, clock, organization_id, amount)
        async with database.transaction() as session:
            count = await hold_service.release_open_holds(
                session, organization_id=organization_id, now=clock.now()
            )
        assert count == 3
        assert (await balance(database, clock, organization_id)).available == 20


class TestManyHoldsInOneTransaction:
    """A group-committed round runs many holds in one transaction: each sees the others."""

    async def test_holds_of_one_transaction_never_take_more_than_available(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 5)
        outcomes: list[str] = []
        async with database.transaction() as session:
            for _ in range(8):
                try:
                    await hold_service.reserve(
                        session, organization_id=organization_id, amount=1, now=clock.now()
                    )
                    outcomes.append("held")
                except TollwayError as error:
                    outcomes.append(error.code)
        assert outcomes == ["held"] * 5 + ["insufficient_credits"] * 3
        figures = await balance(database, clock, organization_id)
        assert (figures.balance, figures.reserved, figures.available) == (5, 5, 0)
        await assert_books_balance(database, organization_id)

    async def test_credits_given_back_or_granted_earlier_in_the_transaction_can_be_held(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 3, source="promo")  # spent first
        await grant(database, clock, organization_id, 3)
        earlier = await reserve(database, clock, organization_id, 3)  # all of the promo lot
        async with database.transaction() as session:
            await hold_service.reserve(
                session, organization_id=organization_id, amount=1, now=clock.now()
            )
            # The used-up promo lot gets 2 back, after this transaction read the lots.
            await hold_service.commit(
                session,
                organization_id=organization_id,
                reservation_id=earlier,
                now=clock.now(),
                amount=1,
            )
            both = await hold_service.reserve(
                session, organization_id=organization_id, amount=4, now=clock.now()
            )
            await grant_service.grant(
                session,
                organization_id=organization_id,
                amount=5,
                source="admin",
                now=clock.now(),
                reason="goodwill",
            )
            fresh = await hold_service.reserve(
                session, organization_id=organization_id, amount=5, now=clock.now()
            )
        assert (both.amount, fresh.amount) == (4, 5)
        figures = await balance(database, clock, organization_id)
        assert (figures.balance, figures.reserved, figures.available) == (10, 10, 0)
        books = await assert_books_balance(database, organization_id)
        assert books["spending"] == 1

    async def test_a_transfer_rolled_back_with_its_savepoint_leaves_no_entries(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 5)
        async with database.transaction() as session:
            await hold_service.reserve(
                session, organization_id=organization_id, amount=2, now=clock.now()
            )
            with pytest.raises(RuntimeError):
                async with session.begin_nested():
                    await hold_service.reserve(
                        session, organization_id=organization_id, amount=3, now=clock.now()
                    )
                    raise RuntimeError("undo this hold")
            entries = await transfer_service.list_entries(
                session, organization_id=organization_id, params=PageParams(limit=50)
            )
        figures = await balance(database, clock, organization_id)
        assert (figures.balance, figures.reserved, figures.available) == (5, 2, 3)
        assert (
            sorted(entry.transfer_kind for entry in entries.items)
            == ["grant"] * 2 + ["reserve"] * 2
        )
        await assert_books_balance(database, organization_id)


class TestExpiryAndReversal:
    async def test_an_expired_lot_moves_to_the_expiry_account(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        lot = await grant(database, clock, organization_id, 10, expires_in=timedelta(hours=1))
        await grant(database, clock, organization_id, 5)
        clock.advance(hours=1)
        assert (await balance(database, clock, organization_id)).available == 5
        async with database.transaction() as session:
            lapsed = await grant_service.expire_grant(
                session, organization_id=organization_id, grant_id=lot, now=clock.now()
            )
            again = await grant_service.expire_grant(
                session, organization_id=organization_id, grant_id=lot, now=clock.now()
            )
        assert (lapsed, again) == (10, 0)
        books = await assert_books_balance(database, organization_id)
        assert (books["expiry"], books["wallet"]) == (10, 5)

    async def test_credits_held_from_a_lot_that_expired_meanwhile_lapse_on_release(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        lot = await grant(database, clock, organization_id, 10, expires_in=timedelta(seconds=60))
        reservation_id = await reserve(database, clock, organization_id, 4, ttl_seconds=120)
        clock.advance(60)
        async with database.transaction() as session:
            assert (
                await grant_service.expire_grant(
                    session, organization_id=organization_id, grant_id=lot, now=clock.now()
                )
                == 6
            )
            await hold_service.release(
                session,
                organization_id=organization_id,
                reservation_id=reservation_id,
                now=clock.now(),
            )
        figures = await balance(database, clock, organization_id)
        assert (figures.balance, figures.reserved, figures.available) == (0, 0, 0)
        books = await assert_books_balance(database, organization_id)
        assert books["expiry"] == 10

    async def test_an_allotment_is_granted_once_per_period_and_rolls_over_up_to_its_cap(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        start = clock.now()
        end = start + timedelta(days=30)
        async with database.transaction() as session:
            first = await grant_service.grant_allotment(
                session,
                organization_id=organization_id,
                amount=200,
                period_start=start,
                period_end=end,
                rollover_cap=50,
            )
            again = await grant_service.grant_allotment(
                session,
                organization_id=organization_id,
                amount=200,
                period_start=start,
                period_end=end,
                rollover_cap=50,
            )
        assert first is not None
        assert again is not None
        assert first.id == again.id
        await reserve(database, clock, organization_id, 10)
        clock.set(end)
        async with database.transaction() as session:
            lapsed = await grant_service.expire_grant(
                session, organization_id=organization_id, grant_id=first.id, now=clock.now()
            )
        assert lapsed == 140
        lots = (await balance(database, clock, organization_id)).grants
        assert [(lot.remaining, lot.expires_at) for lot in lots] == [(50, end + timedelta(days=30))]
        clock.set(end + timedelta(days=30))
        async with database.transaction() as session:
            assert (
                await grant_service.expire_grant(
                    session, organization_id=organization_id, grant_id=first.id, now=clock.now()
                )
                == 50
            )
        await assert_books_balance(database, organization_id)

    async def test_a_plan_without_tokens_grants_nothing(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        async with database.transaction() as session:
            assert (
                await grant_service.grant_allotment(
                    session,
                    organization_id=organization_id,
                    amount=0,
                    period_start=clock.now(),
                    period_end=clock.now() + timedelta(days=1),
                )
                is None
            )

    async def test_a_refund_reverses_the_unspent_part_of_a_pack(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 500, source="purchase", reference="ord_9")
        reservation_id = await reserve(database, clock, organization_id, 200)
        async with database.transaction() as session:
            await hold_service.commit(
                session,
                organization_id=organization_id,
                reservation_id=reservation_id,
                now=clock.now(),
                amount=120,
            )
            reversed_amount = await grant_service.reverse_grant_remaining(
                session,
                organization_id=organization_id,
                reference="ord_9",
                now=clock.now(),
                reason="refund",
            )
            twice = await grant_service.reverse_grant_remaining(
                session,
                organization_id=organization_id,
                reference="ord_9",
                now=clock.now(),
                reason="refund",
            )
        assert (reversed_amount, twice) == (380, 0)
        books = await assert_books_balance(database, organization_id)
        assert (books["refunds"], books["spending"], books["wallet"]) == (380, 120, 0)

    async def test_reversing_an_unknown_grant_is_a_404(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        async with database.transaction() as session:
            error = await error_of(
                grant_service.reverse_grant_remaining(
                    session,
                    organization_id=organization_id,
                    reference="nope",
                    now=clock.now(),
                    reason="x",
                )
            )
        assert error.code == "grant_not_found"


class TestLowBalance:
    async def test_crossing_the_threshold_publishes_once_until_the_balance_recovers(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        await grant(database, clock, organization_id, 30)

        async def spend(amount: int) -> None:
            reservation_id = await reserve(database, clock, organization_id, amount)
            async with database.transaction() as session:
                await hold_service.commit(
                    session,
                    organization_id=organization_id,
                    reservation_id=reservation_id,
                    now=clock.now(),
                    low_balance_threshold=10,
                )

        async def events() -> int:
            async with database.transaction(write=False) as session:
                found = await outbox.list_events(
                    session, event_type="credits.low_balance", organization_id=organization_id
                )
                return len(found)

        await spend(15)
        assert await events() == 0
        await spend(8)  # 7 left: below 10
        await spend(2)  # 5 left: still below, no second event
        assert await events() == 1
        await grant(database, clock, organization_id, 20)  # 25: recovered
        await spend(20)  # 5 again: a new crossing
        assert await events() == 2


class TestTransfers:
    async def test_an_unbalanced_transfer_is_never_written(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        from tollway.ledger import repository
        from tollway.ledger.models import AccountKind, TransferKind

        async with database.transaction() as session:
            accounts = await repository.lock_accounts(
                session, organization_id=organization_id, now=clock.now()
            )
            with pytest.raises(LedgerImbalance):
                await transfer_service.transfer(
                    session,
                    accounts,
                    kind=TransferKind.GRANT,
                    legs={AccountKind.ISSUANCE: -5, AccountKind.WALLET: 4},
                    organization_id=organization_id,
                    now=clock.now(),
                )
            wallet = (
                await session.execute(select(CreditAccount).where(CreditAccount.kind == "wallet"))
            ).scalar_one()
            assert wallet.balance == 0
