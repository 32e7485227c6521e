"""A plan's tokens: the allotment of each period, an upgrade's difference, and a
trial's allotment taken back when the trial ends."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.billing import repository
from tollway.billing.adapters import credits
from tollway.billing.models import Subscription
from tollway.billing.ports import PlanTerms
from tollway.payments.env import PaymentEnv


class AllotmentService:
    async def grant_period(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, plan: PlanTerms
    ) -> None:
        """The plan's tokens for the subscription's current period, once per period."""
        if sub.allotment_granted_for == sub.current_period_start or sub.status not in (
            "trialing",
            "active",
        ):
            return
        sub.allotment_granted_for = sub.current_period_start
        trial = sub.status == "trialing"
        if plan.monthly_tokens <= 0 or (trial and not plan.trial_credits):
            return
        if await repository.allotment_period_taken(
            session,
            organization_id=sub.organization_id,
            period_start=sub.current_period_start,
            except_subscription_id=sub.id,
        ):
            # The ledger keeps one allotment per period start; a plan started in the very
            # instant another subscription's period began gets its own lot by reference.
            await credits().grant(
                session,
                sub.organization_id,
                amount=plan.monthly_tokens,
                source="allotment",
                reference=f"allotment:{sub.id}:{sub.period_index}",
                expires_at=sub.current_period_end,
                now=env.clock.now(),
                reason=f"{plan.name} allotment",
            )
            return
        await credits().grant_allotment(
            session,
            sub.organization_id,
            amount=plan.monthly_tokens,
            period_start=sub.current_period_start,
            period_end=sub.current_period_end,
            # A trial's tokens are the trial's: none roll over into the first paid period.
            rollover_cap=None if trial else plan.rollover_cap or None,
        )

    async def grant_upgrade_difference(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        sub: Subscription,
        old: PlanTerms,
        new: PlanTerms,
    ) -> None:
        """An upgrade's extra tokens for the rest of the period already allotted."""
        if sub.status == "trialing":
            if not new.trial_credits:
                return
            # At most the difference to what the trial already granted, for its rest.
            extra = new.monthly_tokens - (old.monthly_tokens if old.trial_credits else 0)
        else:
            extra = new.monthly_tokens - old.monthly_tokens
        if extra <= 0 or sub.allotment_granted_for != sub.current_period_start:
            return
        await credits().grant(
            session,
            sub.organization_id,
            amount=extra,
            source="allotment",
            reference=f"upgrade:{sub.id}:{sub.period_index}:{new.id}",
            expires_at=sub.current_period_end,
            now=env.clock.now(),
            reason=f"upgrade to {new.name}: the difference for this period",
        )

    async def take_back_trial_credits(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, *, why: str
    ) -> None:
        """A trial's allotments are the trial's: when it ends (converted or not) or is
        cancelled, their unspent rest is reversed (ledger ``reverse`` transfers, audited
        and published), so no trial credit outlives the trial."""
        if sub.status != "trialing" or sub.trial_end is None:
            return
        taken = await credits().reverse_allotments(
            session,
            sub.organization_id,
            granted_from=sub.current_period_start,
            expiring_by=sub.trial_end,
            now=env.clock.now(),
            reason=f"trial {why}: its unspent allotment taken back",
        )
        if taken:
            audit_service.record(
                session,
                action="subscription.trial_credits_reversed",
                target=sub.id,
                organization_id=sub.organization_id,
                details={"credits": taken, "why": why},
            )


allotment_service = AllotmentService()
