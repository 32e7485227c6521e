"""Each "is it due?" rule answers the same in SQL (the sweeps' selection) and in Python
(the re-check on the claimed row)."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import product

from sqlalchemy import select

from tests.conftest import START
from tollway.billing import repository
from tollway.billing.models import DUE_RULES, INCOMPLETE_EXPIRY, Subscription
from tollway.db import Database

STATUSES = ("incomplete", "trialing", "active", "past_due", "unpaid", "canceled")
LICENSE_STATES = ("active", "grace", "restricted")
#: Moments around ``START`` (now), each rule's boundary included.
MOMENTS = (
    None,
    START - INCOMPLETE_EXPIRY - timedelta(seconds=1),
    START - INCOMPLETE_EXPIRY,
    START - timedelta(seconds=1),
    START,
    START + timedelta(seconds=1),
)


def _subscriptions() -> list[Subscription]:
    made: list[Subscription] = []
    for number, (status, license_state, moment, is_current) in enumerate(
        product(STATUSES, LICENSE_STATES, MOMENTS, (True, False))
    ):
        start: datetime = moment or START - timedelta(days=40)
        made.append(
            Subscription(
                id=f"sub_due_{number}",
                organization_id=f"org_due_{number}",
                is_current=is_current,
                plan_id="pro",
                status=status,
                currency="usd",
                billing_anchor=start,
                period_index=0,
                current_period_start=start,
                current_period_end=moment or START + timedelta(days=40),
                license_state=license_state,
                grace_ends_at=moment,
                next_retry_at=moment,
                failed_attempts=0,
                cancel_at_period_end=False,
                created_at=START,
            )
        )
    return made


class TestDueRules:
    async def test_the_sweeps_select_exactly_what_the_services_find_due(
        self, database: Database
    ) -> None:
        async with database.transaction() as session:
            session.add_all(_subscriptions())
        async with database.transaction(write=False) as session:
            rows = list((await session.execute(select(Subscription))).scalars())
            for rule in DUE_RULES:
                selected = set(
                    (await session.execute(repository.list_due(rule, START, limit=10_000)))
                    .scalars()
                    .all()
                )
                found = {sub.id for sub in rows if rule.is_due(sub, START)}
                assert selected == found
                assert found  # every rule has due rows among these

    async def test_the_next_moment_is_the_earliest_due_at_of_any_rule(
        self, database: Database
    ) -> None:
        async with database.transaction() as session:
            session.add_all(_subscriptions())
        async with database.transaction(write=False) as session:
            rows = list((await session.execute(select(Subscription))).scalars())
            moments = [rule.due_at(sub) for rule in DUE_RULES for sub in rows]
            earliest = min(moment for moment in moments if moment is not None)
            assert await repository.next_due_at(session) == earliest
            later = [m for m in moments if m is not None and m > START]
            assert await repository.next_due_at(session, after=START) == min(later)
