"""What an organization may do, cached in process for the hot path.

An entry (plan assignment + plan with overrides) lives at most
:data:`TTL_SECONDS`; a plan change or new overrides committed by this process drop
the entry at once (``on_plan_change``), and other processes see it when their entry
expires, so every process sees a change within a second. Concurrent misses for one
organization share one database read.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tollway.db import Database
from tollway.plans.service import (
    EffectivePlan,
    PlanAssignment,
    catalog_service,
    on_plan_change,
    plans_service,
)

TTL_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class OrganizationEntitlements:
    assignment: PlanAssignment
    effective: EffectivePlan


class EntitlementsCache:
    def __init__(self, database: Database, *, ttl_seconds: float = TTL_SECONDS) -> None:
        self.database = database
        self.ttl_seconds = ttl_seconds
        self._entries: dict[str, tuple[float, OrganizationEntitlements]] = {}
        self._loading: dict[str, asyncio.Future[OrganizationEntitlements]] = {}
        on_plan_change(self.invalidate)

    def invalidate(self, organization_id: str) -> None:
        self._entries.pop(organization_id, None)

    def clear(self) -> None:
        self._entries.clear()

    async def get(self, organization_id: str) -> OrganizationEntitlements:
        entry = self._entries.get(organization_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        pending = self._loading.get(organization_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[OrganizationEntitlements] = (
            asyncio.get_running_loop().create_future()
        )
        self._loading[organization_id] = future
        try:
            value = await self._load(organization_id)
        except Exception as error:
            future.set_exception(error)
            # Retrieved here so that a failed load with no other waiter is not reported
            # as "never retrieved"; the other waiters get it from the future.
            future.exception()
            raise
        except BaseException:
            future.cancel()
            raise
        else:
            future.set_result(value)
            self._entries[organization_id] = (time.monotonic() + self.ttl_seconds, value)
            return value
        finally:
            del self._loading[organization_id]

    async def _load(self, organization_id: str) -> OrganizationEntitlements:
        async with self.database.transaction(write=False) as session:
            await catalog_service.refresh(session)
            assignment, effective = await plans_service.effective_plan(session, organization_id)
        return OrganizationEntitlements(assignment=assignment, effective=effective)
