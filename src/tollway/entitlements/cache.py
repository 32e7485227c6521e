"""What an organization may do, cached in process for the hot path.

An entry (plan assignment + plan with overrides) lives at most one second of the
business clock (:class:`~tollway.kit.cache.TTLCache`, as API keys in the
authenticator do); a plan change or new overrides committed by this process drop the
entry at once (``on_plan_change``), and other processes see the change when their
entry expires, so every process sees it within a second. Concurrent misses for one
organization share one database read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from tollway.db import Database
from tollway.kit.cache import TTLCache
from tollway.kit.clock import Clock
from tollway.plans.service.assignments import (
    EffectivePlan,
    PlanAssignment,
    on_plan_change,
    plans_service,
)
from tollway.plans.service.catalog import catalog_service

TTL = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class OrganizationEntitlements:
    assignment: PlanAssignment
    effective: EffectivePlan


class EntitlementsCache:
    def __init__(self, database: Database, clock: Clock, *, ttl: timedelta = TTL) -> None:
        self.database = database
        self.clock = clock
        self._entries: TTLCache[str, OrganizationEntitlements] = TTLCache(ttl=ttl)
        self._loading: dict[str, asyncio.Future[OrganizationEntitlements]] = {}
        on_plan_change(self.invalidate)

    def invalidate(self, organization_id: str) -> None:
        self._entries.discard(organization_id)

    def clear(self) -> None:
        self._entries.clear()

    async def get(self, organization_id: str) -> OrganizationEntitlements:
        hit, value = self._entries.get(organization_id, now=self.clock.now())
        if hit:
            assert value is not None
            return value
        pending = self._loading.get(organization_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[OrganizationEntitlements] = (
            asyncio.get_running_loop().create_future()
        )
        self._loading[organization_id] = future
        try:
            loaded = await self._load(organization_id)
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
            future.set_result(loaded)
            self._entries.put(organization_id, loaded, now=self.clock.now())
            return loaded
        finally:
            del self._loading[organization_id]

    async def _load(self, organization_id: str) -> OrganizationEntitlements:
        async with self.database.transaction(write=False) as session:
            await catalog_service.refresh(session, now=self.clock.now())
            assignment, effective = await plans_service.effective_plan(session, organization_id)
        return OrganizationEntitlements(assignment=assignment, effective=effective)
