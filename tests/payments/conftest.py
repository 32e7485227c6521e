from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.billing import (
    BillingAccount,
    MemoryCredits,
    StaticCatalog,
    catalog,
    create_organization,
    ledger,
)

__all__ = ["catalog", "ledger"]


@pytest.fixture
async def account(
    app: FastAPI, client: httpx.AsyncClient, catalog: StaticCatalog, ledger: MemoryCredits
) -> BillingAccount:
    return await create_organization(client, app)
