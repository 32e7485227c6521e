"""The abuse battery: limits per subject, shared through the database, on the Clock."""

from __future__ import annotations

import pytest

from tollway.db import Database
from tollway.errors import TollwayError
from tollway.kit.clock import ManualClock
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams
from tollway.ledger.abuse import AbuseDecision, AbusePolicy, abuse_service
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service

SUBJECT = "user:usr_01JD8X3N5Q8W6Y2ZB4C7D9E0F1"


async def evaluate(
    database: Database,
    clock: ManualClock,
    organization_id: str,
    credits: int = 1,
    *,
    policy: AbusePolicy = AbusePolicy(),
    subject: str = SUBJECT,
) -> AbuseDecision:
    async with database.transaction() as session:
        return await abuse_service.evaluate(
            session,
            organization_id=organization_id,
            subject=subject,
            credits=credits,
            now=clock.now(),
            policy=policy,
        )


async def fail(database: Database, clock: ManualClock, organization_id: str) -> None:
    async with database.transaction() as session:
        await abuse_service.record_failure(
            session, organization_id=organization_id, subject=SUBJECT, now=clock.now()
        )


class TestAbusePolicy:
    def test_the_defaults_are_the_seeds(self) -> None:
        policy = AbusePolicy()
        assert (
            policy.requests_per_minute,
            policy.min_interval_seconds,
            policy.max_credits_per_request,
            policy.max_output_units,
            policy.fraud_credits_per_hour,
            policy.max_failures,
            policy.failure_window_seconds,
            policy.block_seconds,
        ) == (30, 3, 10, 2000, 500, 5, 900, 900)

    def test_overrides_replace_defaults_and_unknown_names_are_refused(self) -> None:
        assert AbusePolicy.from_mapping({"requests_per_minute": 60}).requests_per_minute == 60
        with pytest.raises(ValueError, match="bogus"):
            AbusePolicy.from_mapping({"bogus": 1})


class TestAbuseBattery:
    async def test_at_least_the_minimum_gap_between_requests(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        assert (await evaluate(database, clock, organization_id)).allowed
        clock.advance(1)
        denied = await evaluate(database, clock, organization_id)
        assert (denied.allowed, denied.code, denied.retry_after) == (False, "too_frequent", 2)
        clock.advance(2)
        assert (await evaluate(database, clock, organization_id)).allowed

    async def test_at_most_n_requests_a_minute(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        policy = AbusePolicy(requests_per_minute=3, min_interval_seconds=0)
        for _ in range(3):
            assert (await evaluate(database, clock, organization_id, policy=policy)).allowed
            clock.advance(10)
        denied = await evaluate(database, clock, organization_id, policy=policy)
        assert (denied.code, denied.retry_after) == ("rate_limited", 30)
        clock.advance(30)
        assert (await evaluate(database, clock, organization_id, policy=policy)).allowed

    async def test_the_seed_limit_of_thirty_a_minute_holds(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        policy = AbusePolicy(min_interval_seconds=0)
        decisions = [
            (await evaluate(database, clock, organization_id, policy=policy)).code
            for _ in range(31)
        ]
        assert decisions == [None] * 30 + ["rate_limited"]

    async def test_subjects_are_counted_apart(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        assert (await evaluate(database, clock, organization_id)).allowed
        assert (await evaluate(database, clock, organization_id, subject="user:other")).allowed

    async def test_too_many_credits_in_one_request(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        denied = await evaluate(database, clock, organization_id, credits=11)
        assert denied.code == "request_too_large"
        assert (await evaluate(database, clock, organization_id, credits=10)).allowed

    async def test_five_failures_in_fifteen_minutes_block_for_fifteen_minutes(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        for _ in range(5):
            await fail(database, clock, organization_id)
            clock.advance(60)
        denied = await evaluate(database, clock, organization_id)
        assert (denied.code, denied.retry_after) == ("temporarily_blocked", 15 * 60 - 60)
        clock.advance(15 * 60 - 61)
        assert (await evaluate(database, clock, organization_id)).code == "temporarily_blocked"
        clock.advance(1)
        assert (await evaluate(database, clock, organization_id)).allowed

    async def test_failures_spread_over_more_than_the_window_do_not_block(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        for _ in range(5):
            await fail(database, clock, organization_id)
            clock.advance(minutes=4)
        assert (await evaluate(database, clock, organization_id)).allowed

    async def test_more_than_the_hourly_threshold_flags_once_without_denying(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        policy = AbusePolicy(min_interval_seconds=0, requests_per_minute=1000)
        for _ in range(52):
            assert (await evaluate(database, clock, organization_id, 10, policy=policy)).allowed
            clock.advance(1)
        async with database.transaction(write=False) as session:
            flags = await abuse_service.list_fraud_flags(session, params=PageParams())
            events = await outbox.list_events(session, event_type="credits.fraud_flagged")
        assert len(flags.items) == len(events) == 1
        assert (flags.items[0].credits_in_window, flags.items[0].subject) == (510, SUBJECT)
        clock.advance(hours=1)
        for _ in range(51):
            await evaluate(database, clock, organization_id, 10, policy=policy)
        async with database.transaction(write=False) as session:
            flags = await abuse_service.list_fraud_flags(session, params=PageParams())
        assert len(flags.items) == 2

    async def test_releases_count_as_failures_and_a_refusal_for_lack_of_credits_does_not(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        policy = AbusePolicy(max_failures=2, min_interval_seconds=0)
        async with database.transaction() as session:
            await grant_service.grant(
                session,
                organization_id=organization_id,
                amount=5,
                source="admin",
                now=clock.now(),
                reason="t",
            )
            held = await hold_service.reserve(
                session, organization_id=organization_id, amount=1, now=clock.now(), subject=SUBJECT
            )
            await hold_service.release(
                session, organization_id=organization_id, reservation_id=held.id, now=clock.now()
            )
        # Like the request edge: an error with commit_transaction keeps its writes.
        for _ in range(3):
            transaction = database.transaction()
            session = await transaction.begin()
            with pytest.raises(TollwayError) as raised:
                await hold_service.reserve(
                    session,
                    organization_id=organization_id,
                    amount=9,
                    now=clock.now(),
                    subject=SUBJECT,
                )
            assert raised.value.code == "insufficient_credits"
            await transaction.commit()
        clock.advance(1)
        assert (await evaluate(database, clock, organization_id, policy=policy)).allowed
        async with database.transaction() as session:
            held = await hold_service.reserve(
                session, organization_id=organization_id, amount=1, now=clock.now(), subject=SUBJECT
            )
            await hold_service.release(
                session, organization_id=organization_id, reservation_id=held.id, now=clock.now()
            )
        clock.advance(1)
        denied = await evaluate(database, clock, organization_id, policy=policy)
        assert denied.code == "temporarily_blocked"

    async def test_output_above_the_limit_is_refused(self) -> None:
        with pytest.raises(Exception, match="exceeds the limit") as raised:
            abuse_service.check_output(2001)
        assert getattr(raised.value, "code", None) == "output_too_large"
        abuse_service.check_output(2000)
        abuse_service.check_output(None)


class TestAbuseBatteryOrdering:
    async def test_without_a_minimum_gap_a_request_timed_before_the_last_one_passes(
        self, database: Database, clock: ManualClock, organization_id: str
    ) -> None:
        policy = AbusePolicy(min_interval_seconds=0)
        clock.advance(5)
        assert (await evaluate(database, clock, organization_id, policy=policy)).allowed
        clock.advance(-1)  # read its time before the previous request took the lock
        assert (await evaluate(database, clock, organization_id, policy=policy)).allowed
        clock.advance(-1)
        assert (await evaluate(database, clock, organization_id)).code == "too_frequent"
