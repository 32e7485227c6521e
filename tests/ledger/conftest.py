"""Helpers for the ledger's tests: organizations made directly, invariants checked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tollway.accounts.models import Organization
from tollway.db import Database
from tollway.kit.ids import new_id
from tollway.ledger import repository
from tollway.ledger.models import AccountKind

MakeOrganization = Callable[[], Awaitable[str]]


@pytest.fixture
def make_organization(database: Database) -> MakeOrganization:
    async def make() -> str:
        organization_id = new_id("org")
        async with database.transaction() as session:
            session.add(Organization(id=organization_id, name="Acme"))
        return organization_id

    return make


@pytest.fixture
async def organization_id(make_organization: MakeOrganization) -> str:
    return await make_organization()


async def assert_books_balance(database: Database, organization_id: str) -> dict[str, int]:
    """Every transfer sums to zero and every account's balance is the sum of its entries.

    Returns the account balances by kind.
    """
    async with database.transaction(write=False) as session:
        per_transfer = await repository.sum_entries_by_transfer(
            session, organization_id=organization_id
        )
        per_account = await repository.sum_entries_by_account(
            session, organization_id=organization_id
        )
        accounts = await repository.get_accounts(session, organization_id=organization_id)
        transfers = await repository.list_transfers(session, organization_id=organization_id)
    assert {transfer.id for transfer in transfers} == set(per_transfer)
    assert all(total == 0 for total in per_transfer.values()), per_transfer
    balances = {kind.value: 0 for kind in AccountKind}
    balances.update({kind: account.balance for kind, account in accounts.items()})
    for kind in AccountKind:
        assert balances.get(kind.value, 0) == per_account.get(kind.value, 0), kind
    assert sum(balances.values()) == 0
    return balances
