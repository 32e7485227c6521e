from __future__ import annotations

import pytest
from fastapi import FastAPI

from tests.fixtures.billing import (
    BillingAccount,
    MemoryCredits,
    StaticCatalog,
    catalog,
    create_organization,
    install_test_auth,
    ledger,
)
from tollway.db import Database

__all__ = ["catalog", "ledger"]


@pytest.fixture
async def account(
    app: FastAPI, database: Database, catalog: StaticCatalog, ledger: MemoryCredits
) -> BillingAccount:
    install_test_auth(app)
    return await create_organization(database)
