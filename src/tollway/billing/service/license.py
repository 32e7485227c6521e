"""License state: what entitlements enforce for a subscription (active, grace,
restricted, canceled), kept in step with the subscription and with open disputes."""

from __future__ import annotations

from typing import cast

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.billing import repository
from tollway.billing.adapters import catalog, credits
from tollway.billing.models import GRACE_OVER, Subscription
from tollway.billing.ports import LicenseState
from tollway.billing.service.base import publish_subscription, touch
from tollway.payments.env import PaymentEnv
from tollway.payments.service.disputes import dispute_service


class LicenseStateService:
    async def sync(self, session: AsyncSession, sub: Subscription) -> None:
        """Tell entitlements the subscription's plan and license state (an incomplete
        first attempt changes nothing: the organization stays on what it had)."""
        if sub.status == "incomplete":
            return
        await catalog().assign_plan(
            session,
            sub.organization_id,
            sub.plan_id,
            license_state=cast(LicenseState, sub.license_state),
            grace_ends_at=sub.grace_ends_at,
        )

    async def set_state(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, state: str
    ) -> None:
        if state != "canceled" and await dispute_service.access_frozen(
            session, organization_id=sub.organization_id
        ):
            state = "restricted"  # a dispute is open or was lost
        if sub.license_state == state:
            return
        previous, sub.license_state = sub.license_state, state
        touch(env, sub)
        await self.sync(session, sub)
        if state == "grace":
            await credits().release_open_holds(session, sub.organization_id, now=env.clock.now())
        audit_service.record(
            session,
            action="license.state_changed",
            target=sub.id,
            organization_id=sub.organization_id,
            details={"from": previous, "to": state},
        )
        await publish_subscription(
            session, env, sub, "license.state_changed", state=state, previous_state=previous
        )

    async def access_changed(
        self, session: AsyncSession, env: PaymentEnv, organization_id: str
    ) -> None:
        """A dispute froze the organization's paid access, or its closure restored it:
        the license follows (restricted while frozen, else what the status implies)."""
        sub = await repository.get_current_subscription(
            session, organization_id=organization_id, for_update=True
        )
        if sub is None or sub.status in ("incomplete", "canceled"):
            return
        now = env.clock.now()
        if sub.status in ("active", "trialing"):
            natural = "active"
        elif sub.status == "past_due" and sub.grace_ends_at is not None and sub.grace_ends_at > now:
            natural = "grace"
        else:
            natural = "restricted"
        await self.set_state(session, env, sub, natural)

    async def end_grace(
        self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str
    ) -> bool:
        """Grace is over: the license becomes restricted (row claimed by the caller)."""
        sub = await session.get(Subscription, subscription_id)
        if sub is None or not GRACE_OVER.is_due(sub, env.clock.now()):
            return False
        await self.set_state(session, env, sub, "restricted")
        return True


license_state_service = LicenseStateService()
