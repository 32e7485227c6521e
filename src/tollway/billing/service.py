"""The billing engine: subscriptions, invoices, collection, dunning and license state.

Lifecycle. Every organization starts on the catalog's free plan. A paid plan starts
with the plan's trial (once per organization) or with a first invoice. At each
period end the ``billing.renew`` sweep closes the period: it applies a scheduled
downgrade or cancellation, or invoices the next period in advance (base fee) plus
the ending period's overage in arrears, and collects it off-session. Upgrades take
effect at once with a proration invoice; downgrades wait for the period end.

Dunning. A failed collection makes the subscription ``past_due`` and the license
``grace`` (features whose policy is ``immediate`` go off, open credit holds are
released); retries follow the catalog's schedule (2, 5, 7, 7 days between attempts);
when grace ends the license is ``restricted`` (``after_grace`` features off too);
after the last failed retry the subscription is ``unpaid`` or ``canceled`` as the
catalog says. Paying the open invoices restores ``active`` at any point.

Every state change is *set* from facts (a payment's attempt number, the clock), so
repeated or reordered events and sweeps converge to the same state, and every
transition publishes an outbox event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Organization
from tollway.accounts.service import account_service
from tollway.audit.service import audit_service
from tollway.billing import repository
from tollway.billing.arithmetic import (
    period_bounds,
    prorate,
    tax_exclusive,
    tax_inclusive,
)
from tollway.billing.models import CreditNote, Invoice, InvoiceLine, PackOrder, Subscription
from tollway.billing.ports import LicenseState, PlanTerms, catalog, credits
from tollway.errors import Conflict, NotFound, Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import PaymentMethodRequired, RefundExceedsPaid
from tollway.payments.models import Payment
from tollway.payments.service.charges import OffSessionCharge, charge_service
from tollway.payments.service.checkout import checkout_service
from tollway.payments.service.disputes import dispute_service
from tollway.payments.service.methods import payment_method_service
from tollway.payments.service.refunds import refund_service

log = structlog.get_logger("tollway.billing")

INVOICE_PURPOSE = "invoice"
#: session.info key: a renewal chunk's invoices waiting for their charge.
_DEFERRED_CHARGES = "tollway.billing.deferred_charges"
#: session.info key: organizations read ahead by :meth:`BillingService.prepare_renewals`.
_ORGANIZATIONS = "tollway.billing.organizations"
#: A first invoice that is not paid within this time ends the attempt (Stripe: 23 h).
INCOMPLETE_EXPIRY = timedelta(hours=23)


class UnknownPlan(Unprocessable):
    code = "unknown_plan"
    title = "Unknown plan"


class PlanUnchanged(Conflict):
    code = "plan_unchanged"
    title = "Already on this plan"


class SubscriptionPastDue(Conflict):
    code = "subscription_past_due"
    title = "Subscription past due"


class NotCancelable(Conflict):
    code = "subscription_not_cancelable"
    title = "Nothing to cancel"


class CurrencyMismatch(Conflict):
    code = "currency_mismatch"
    title = "Currency mismatch"


class InvoiceNotFound(NotFound):
    code = "invoice_not_found"
    title = "Invoice not found"


class TokenPackNotFound(NotFound):
    code = "token_pack_not_found"
    title = "Token pack not found"


@dataclass(frozen=True, slots=True)
class LineSpec:
    kind: str
    description: str
    amount_minor: int
    quantity: int = 1
    unit_amount_minor: int | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class InvoiceView:
    invoice: Invoice
    lines: list[InvoiceLine]
    credit_notes: list[CreditNote]


def refunded_credit_share(
    tokens: int, *, paid_minor: int, refunded_before_minor: int, refunded_after_minor: int
) -> int:
    """The credits a partial refund takes back: its share of the pack's ``tokens``.

    Rounded down on the running total: floor(tokens x refunded so far / paid) less the
    same figure before this refund. Each refund therefore takes only its own share, and
    the shares of successive refunds add up to floor(tokens x total refunded / paid):
    500 tokens paid 2,900, refunded 1,000 then 1,000 again: 172, then 344 - 172 = 172.
    """
    if paid_minor <= 0:
        return 0
    return (tokens * refunded_after_minor) // paid_minor - (
        tokens * refunded_before_minor
    ) // paid_minor


def _stable_reference(subscription_id: str, period_start: datetime, reason: str) -> str:
    """What a subscription invoice's charge pays, named without the invoice's own ID."""
    return f"{subscription_id}:{period_start:%Y%m%dT%H%M%S}:{reason}"


def _yearly_cost(plan: PlanTerms) -> int:
    return plan.amount_minor * (1 if plan.interval == "year" else 12)


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


class BillingService:
    # -- subscriptions --------------------------------------------------------------

    async def current(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> Subscription:
        """The organization's subscription, read only: reads never write.

        An organization that never subscribed has no row; it is answered with an unsaved
        view (``id`` None, status ``active``) of what entitlements enforce for it: the
        plan and license state of its assignment - the default plan, or one an operator
        assigned (``PUT /api/v1/admin/organizations/{id}/plan``) - in monthly periods
        counted from the organization's creation.
        """
        sub = await repository.get_current_subscription(session, organization_id=organization_id)
        if sub is not None:
            return sub
        plan_id, license_state, grace_ends_at = await catalog().assignment(session, organization_id)
        plan = await catalog().get_plan(session, plan_id)
        interval = plan.interval if plan is not None else "month"
        now = env.clock.now()
        organization = await account_service.get_organization(session, organization_id)
        anchor = min(organization.created_at, now)
        index = 0
        period_start, period_end = period_bounds(anchor, index, interval)
        while period_end <= now:
            index += 1
            period_start, period_end = period_bounds(anchor, index, interval)
        return Subscription(
            id=None,
            organization_id=organization_id,
            is_current=True,
            plan_id=plan_id,
            catalog_version=plan.catalog_version if plan is not None else None,
            status="active",
            currency=plan.currency if plan is not None else "usd",
            billing_anchor=anchor,
            period_index=index,
            current_period_start=period_start,
            current_period_end=period_end,
            cancel_at_period_end=False,
            license_state=license_state,
            grace_ends_at=grace_ends_at,
            created_at=anchor,
            updated_at=now,
        )

    async def _current_for_update(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str
    ) -> Subscription:
        """The subscription a write changes, locked; a first-time organization's Free
        subscription is booked here (in the write, never in a read)."""
        sub = await repository.get_current_subscription(
            session, organization_id=organization_id, for_update=True
        )
        if sub is None:
            sub = await self.start_free(session, env, organization_id=organization_id)
        return sub

    async def start_free(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        organization_id: str,
        at: datetime | None = None,
    ) -> Subscription:
        free_id = catalog().default_plan_id
        plan = await self._plan(session, free_id)
        start = at or env.clock.now()
        period_start, period_end = period_bounds(start, 0, plan.interval)
        sub = Subscription(
            id=new_id("sub"),
            organization_id=organization_id,
            is_current=True,
            plan_id=plan.id,
            catalog_version=plan.catalog_version,
            status="active",
            currency=plan.currency,
            billing_anchor=start,
            period_index=0,
            current_period_start=period_start,
            current_period_end=period_end,
            license_state="active",
            created_at=env.clock.now(),
            updated_at=env.clock.now(),
        )
        await repository.add(session, sub)
        await self._sync_license(session, sub)
        await self._grant_allotment(session, env, sub, plan)
        await self._publish(session, env, sub, "subscription.created")
        return sub

    async def change_plan(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, plan_id: str
    ) -> Subscription:
        """Upgrade now (with proration), downgrade at the period end, or start a paid plan."""
        target = await catalog().get_plan(session, plan_id)
        if target is None:
            raise UnknownPlan(
                f"there is no plan {plan_id!r}; GET /api/v1/billing/pricing lists them"
            )
        sub = await self._current_for_update(session, env, organization_id=organization_id)
        now = env.clock.now()
        if target.id == sub.plan_id:
            if sub.pending_plan_id is not None or sub.cancel_at_period_end:
                # Choosing the current plan again takes back a scheduled change.
                sub.pending_plan_id = None
                sub.cancel_at_period_end = False
                sub.canceled_at = None
                await self._touch(session, env, sub)
                await self._publish(session, env, sub, "subscription.updated")
                return sub
            raise PlanUnchanged(f"the organization is already on {target.id!r}")
        current_plan = await self._sub_plan(session, sub)
        if not target.is_free:
            method = await payment_method_service.default_method(
                session, env, organization_id=organization_id
            )
            if method is None:
                raise PaymentMethodRequired(
                    f"the plan {target.id!r} needs a card: add one with "
                    "POST /api/v1/billing/payment-methods, then retry",
                    add_payment_method_url="/api/v1/billing/payment-methods",
                )
        if sub.status in ("past_due", "unpaid", "incomplete") and not target.is_free:
            raise SubscriptionPastDue(
                "pay the open invoice first (add a working card to retry it at once)"
            )
        if current_plan.is_free or sub.status == "canceled":
            return await self._start_paid(session, env, sub, target)
        if not current_plan.is_free and target.currency != sub.currency and not target.is_free:
            raise CurrencyMismatch(f"the subscription is billed in {sub.currency}")
        if target.is_free or _yearly_cost(target) < _yearly_cost(current_plan):
            sub.pending_plan_id = target.id
            await self._touch(session, env, sub)
            audit_service.record(
                session,
                action="subscription.downgrade_scheduled",
                target=sub.id,
                organization_id=organization_id,
                details={"plan": target.id},
            )
            await self._publish(
                session,
                env,
                sub,
                "subscription.downgrade_scheduled",
                plan=target.id,
                effective_at=sub.current_period_end.isoformat(),
            )
            return sub
        return await self._upgrade(session, env, sub, current_plan, target, now)

    async def _start_paid(
        self, session: AsyncSession, env: PaymentEnv, old: Subscription, plan: PlanTerms
    ) -> Subscription:
        now = env.clock.now()
        trial = plan.trial_days > 0 and not await repository.has_trialed(
            session, organization_id=old.organization_id
        )
        old.is_current = False
        if old.status != "canceled":
            old.status = "canceled"
            old.ended_at = now
        old.updated_at = now
        await session.flush()
        if trial:
            period_start, period_end = now, now + timedelta(days=plan.trial_days)
        else:
            period_start, period_end = period_bounds(now, 0, plan.interval)
        sub = Subscription(
            id=new_id("sub"),
            organization_id=old.organization_id,
            is_current=True,
            plan_id=plan.id,
            catalog_version=plan.catalog_version,
            status="trialing" if trial else "incomplete",
            currency=plan.currency,
            billing_anchor=period_end if trial else now,
            period_index=-1 if trial else 0,
            current_period_start=period_start,
            current_period_end=period_end,
            trial_end=period_end if trial else None,
            license_state="active",
            created_at=now,
            updated_at=now,
        )
        await repository.add(session, sub)
        audit_service.record(
            session,
            action="subscription.created",
            target=sub.id,
            organization_id=sub.organization_id,
            details={"plan": plan.id, "trial": trial},
        )
        await self._publish(session, env, sub, "subscription.created")
        if trial:
            await self._sync_license(session, sub)
            await self._grant_allotment(session, env, sub, plan)
            return sub
        invoice = await self._issue_invoice(
            session,
            env,
            sub=sub,
            organization_id=sub.organization_id,
            currency=plan.currency,
            reason="subscription_create",
            period=(period_start, period_end),
            lines=[self._base_line(plan, period_start, period_end)],
        )
        await self._collect(session, env, invoice, attempt=1)
        return sub

    async def _upgrade(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        sub: Subscription,
        old: PlanTerms,
        new: PlanTerms,
        now: datetime,
    ) -> Subscription:
        sub.pending_plan_id = None
        if sub.status == "trialing":
            # A plan change during the trial keeps the trial; the first invoice uses the new plan.
            sub.plan_id, sub.catalog_version = new.id, new.catalog_version
            await self._touch(session, env, sub)
            await self._sync_license(session, sub)
            await self._grant_upgrade_tokens(session, env, sub, old, new)
            await self._publish(
                session, env, sub, "subscription.plan_changed", previous_plan=old.id
            )
            return sub
        period = _seconds(sub.current_period_end - sub.current_period_start)
        remaining = _seconds(sub.current_period_end - now)
        credit = prorate(old.amount_minor, remaining_seconds=remaining, period_seconds=period)
        lines = [
            LineSpec(
                kind="proration_credit",
                description=f"Unused time on {old.name}",
                amount_minor=-credit,
                period_start=now,
                period_end=sub.current_period_end,
                reference=old.id,
            )
        ]
        if new.interval == old.interval:
            charge = prorate(new.amount_minor, remaining_seconds=remaining, period_seconds=period)
            lines.append(
                LineSpec(
                    kind="proration_charge",
                    description=f"Remaining time on {new.name}",
                    amount_minor=charge,
                    period_start=now,
                    period_end=sub.current_period_end,
                    reference=new.id,
                )
            )
        else:
            # Another interval starts a new period now, billed in full.
            sub.billing_anchor, sub.period_index = now, 0
            sub.current_period_start, sub.current_period_end = period_bounds(now, 0, new.interval)
            lines.append(self._base_line(new, sub.current_period_start, sub.current_period_end))
        sub.plan_id, sub.catalog_version = new.id, new.catalog_version
        await self._touch(session, env, sub)
        await self._sync_license(session, sub)
        audit_service.record(
            session,
            action="subscription.upgraded",
            target=sub.id,
            organization_id=sub.organization_id,
            details={"from": old.id, "to": new.id},
        )
        await self._publish(session, env, sub, "subscription.plan_changed", previous_plan=old.id)
        invoice = await self._issue_invoice(
            session,
            env,
            sub=sub,
            organization_id=sub.organization_id,
            currency=new.currency,
            reason="subscription_update",
            period=(now, sub.current_period_end),
            lines=lines,
        )
        if invoice.status == "open":
            await self._collect(session, env, invoice, attempt=1)
        await self._grant_upgrade_tokens(session, env, sub, old, new)
        return sub

    async def cancel(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, at_period_end: bool
    ) -> Subscription:
        """Cancel at the period end (default) or now; the organization then returns to Free."""
        sub = await self._current_for_update(session, env, organization_id=organization_id)
        plan = await self._sub_plan(session, sub)
        if plan.is_free:
            raise NotCancelable("the free plan has nothing to cancel")
        now = env.clock.now()
        audit_service.record(
            session,
            action="subscription.cancel",
            target=sub.id,
            organization_id=organization_id,
            details={"at_period_end": at_period_end},
        )
        if at_period_end and sub.status not in ("incomplete", "unpaid"):
            sub.cancel_at_period_end = True
            sub.canceled_at = now
            await self._touch(session, env, sub)
            await self._publish(
                session,
                env,
                sub,
                "subscription.cancel_scheduled",
                effective_at=sub.current_period_end.isoformat(),
            )
            return sub
        return await self._end(session, env, sub, at=now, void_open=True)

    async def _end(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        sub: Subscription,
        *,
        at: datetime,
        void_open: bool,
        uncollectible: bool = False,
    ) -> Subscription:
        """End ``sub`` and start the organization's Free subscription at ``at``."""
        await self._take_back_trial_credits(session, env, sub, why="canceled")
        for invoice in await repository.list_open_invoices(session, subscription_id=sub.id):
            if uncollectible:
                invoice.status = "uncollectible"
                await self._publish_invoice(session, env, invoice, "invoice.marked_uncollectible")
            elif void_open:
                invoice.status = "void"
                invoice.voided_at = env.clock.now()
                await self._publish_invoice(session, env, invoice, "invoice.voided")
        sub.status = "canceled"
        sub.license_state = "canceled"
        sub.ended_at = at
        sub.canceled_at = sub.canceled_at or at
        sub.is_current = False
        sub.next_retry_at = None
        await self._touch(session, env, sub)
        await self._publish(session, env, sub, "subscription.canceled")
        await self._publish(session, env, sub, "license.state_changed", state="canceled")
        return await self.start_free(session, env, organization_id=sub.organization_id, at=at)

    # -- the sweeps' work, one subscription per call ------------------------------------

    async def renew(self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str) -> bool:
        """Close the ended period of one subscription; False when it was not due.

        The caller holds the row (the sweep claims it with ``claim_due``).
        """
        sub = await session.get(Subscription, subscription_id)
        now = env.clock.now()
        if (
            sub is None
            or not sub.is_current
            or sub.status not in ("trialing", "active", "past_due")
            or sub.current_period_end > now
        ):
            return False
        ended_start, ended_end = sub.current_period_start, sub.current_period_end
        if not sub.cancel_at_period_end:
            await self._take_back_trial_credits(session, env, sub, why="ended")
        if sub.cancel_at_period_end:
            await self._end(session, env, sub, at=ended_end, void_open=False)
            return True
        # The ended period's plan at the prices the subscription pays (its overage too).
        old_plan = await self._sub_plan(session, sub)
        if sub.pending_plan_id is not None:
            target = await self._plan(session, sub.pending_plan_id)
            sub.pending_plan_id = None
            if target.is_free:
                await self._end(session, env, sub, at=ended_end, void_open=False)
                return True
            sub.plan_id, sub.catalog_version = target.id, target.catalog_version
            await self._sync_license(session, sub)
            await self._publish(
                session, env, sub, "subscription.plan_changed", previous_plan=old_plan.id
            )
        plan = await self._sub_plan(session, sub)
        sub.period_index += 1
        sub.current_period_start, sub.current_period_end = period_bounds(
            sub.billing_anchor, sub.period_index, plan.interval
        )
        if sub.status == "trialing":
            await self._set_status(session, env, sub, "active")
        await self._touch(session, env, sub)
        await self._publish(session, env, sub, "subscription.renewed")
        lines: list[LineSpec] = []
        if not plan.is_free:
            lines.append(self._base_line(plan, sub.current_period_start, sub.current_period_end))
        if ended_start < ended_end and sub.trial_end != ended_end:
            lines += await self._overage_lines(session, sub, old_plan, ended_start, ended_end)
        if not lines:
            await self._grant_allotment(session, env, sub, plan)
            return True
        invoice = await self._issue_invoice(
            session,
            env,
            sub=sub,
            organization_id=sub.organization_id,
            currency=plan.currency,
            reason="subscription_cycle",
            period=(sub.current_period_start, sub.current_period_end),
            lines=lines,
        )
        if invoice.status == "open":
            await self._collect(session, env, invoice, attempt=1)
        return True

    async def prepare_renewals(
        self, session: AsyncSession, env: PaymentEnv, subscriptions: list[Subscription]
    ) -> None:
        """Read what the renewals of a sweep's chunk need in one query each instead of
        one per renewal: the organizations (the invoices' buyer and tax country) and
        their default cards (the charges). Only a reading ahead: :meth:`renew` decides
        as before, and reads anything not read here itself."""
        organization_ids = [sub.organization_id for sub in subscriptions]
        if not organization_ids:
            return
        # The chunk's charges are made together by finish_renewals, once every renewal
        # of the chunk has its invoice.
        session.info[_DEFERRED_CHARGES] = []
        held: dict[str, Organization] = session.info.setdefault(_ORGANIZATIONS, {})
        held.update(await account_service.get_organizations(session, organization_ids))
        # The ended periods' usage, for their overage lines (see renew).
        periods: list[tuple[str, str, datetime, datetime]] = []
        for sub in subscriptions:
            if sub.current_period_start >= sub.current_period_end:
                continue
            plan = await catalog().get_plan(session, sub.plan_id, version=sub.catalog_version)
            if plan is None:
                continue  # renew says what is wrong, for this subscription alone
            periods += [
                (sub.organization_id, price.meter, sub.current_period_start, sub.current_period_end)
                for price in plan.meter_prices
            ]
        await catalog().prepare_usage(session, periods)
        # A renewal's period starts where the ended one ends; its invoice's charge is
        # named after that (see _collect).
        await charge_service.prepare_charges(
            session,
            env,
            organization_ids=organization_ids,
            purpose=INVOICE_PURPOSE,
            stable_references=[
                _stable_reference(sub.id, sub.current_period_end, "subscription_cycle")
                for sub in subscriptions
            ],
        )

    async def retry(self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str) -> bool:
        """The next dunning attempt of one past-due subscription (row claimed by the caller)."""
        sub = await session.get(Subscription, subscription_id)
        now = env.clock.now()
        if (
            sub is None
            or not sub.is_current
            or sub.status != "past_due"
            or sub.next_retry_at is None
            or sub.next_retry_at > now
        ):
            return False
        sub.next_retry_at = None  # set again when this attempt fails
        await self._touch(session, env, sub)
        await self._collect_open(session, env, sub, attempt=sub.failed_attempts + 1)
        return True

    async def end_grace(
        self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str
    ) -> bool:
        """Grace is over: the license becomes restricted (row claimed by the caller)."""
        sub = await session.get(Subscription, subscription_id)
        now = env.clock.now()
        if (
            sub is None
            or sub.license_state != "grace"
            or sub.grace_ends_at is None
            or sub.grace_ends_at > now
        ):
            return False
        await self._set_license(session, env, sub, "restricted")
        return True

    async def expire_incomplete(
        self, session: AsyncSession, env: PaymentEnv, *, subscription_id: str
    ) -> bool:
        """A first invoice unpaid for :data:`INCOMPLETE_EXPIRY`: void it, back to Free."""
        sub = await session.get(Subscription, subscription_id)
        now = env.clock.now()
        if (
            sub is None
            or not sub.is_current
            or sub.status != "incomplete"
            or sub.current_period_start + INCOMPLETE_EXPIRY > now
        ):
            return False
        await self._end(session, env, sub, at=now, void_open=True)
        return True

    async def next_due_at(
        self, session: AsyncSession, *, after: datetime | None = None
    ) -> datetime | None:
        return await repository.next_due_at(
            session, incomplete_expiry=INCOMPLETE_EXPIRY, after=after
        )

    # -- collection and dunning -------------------------------------------------------

    async def _collect_open(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, *, attempt: int
    ) -> None:
        for invoice in await repository.list_open_invoices(session, subscription_id=sub.id):
            await self._collect(session, env, invoice, attempt=attempt)

    async def _collect(
        self, session: AsyncSession, env: PaymentEnv, invoice: Invoice, *, attempt: int
    ) -> None:
        """Charge the invoice's amount due off-session; the outcome arrives as an event.

        In a renewal chunk (:meth:`prepare_renewals`) the charge waits for
        :meth:`finish_renewals`, which makes the chunk's charges together."""
        deferred: list[tuple[Invoice, int]] | None = session.info.get(_DEFERRED_CHARGES)
        if deferred is not None:
            deferred.append((invoice, attempt))
            return
        await self._charge_invoices(session, env, [(invoice, attempt)])

    async def _charge_invoices(
        self, session: AsyncSession, env: PaymentEnv, invoices: list[tuple[Invoice, int]]
    ) -> None:
        charges: list[OffSessionCharge] = []
        for invoice, attempt in invoices:
            stable: str | None = None
            description = f"Invoice {invoice.number}"
            if invoice.subscription_id is not None and invoice.period_start is not None:
                # A renewal rolled back after the provider answered is made again with a
                # new invoice ID and maybe another number: the charge is named by what
                # does not change (subscription, period, reason) so its retry cannot
                # charge twice.
                stable = _stable_reference(
                    invoice.subscription_id, invoice.period_start, invoice.billing_reason
                )
                description = f"Subscription, period from {invoice.period_start:%Y-%m-%d}"
            charges.append(
                OffSessionCharge(
                    organization_id=invoice.organization_id,
                    amount_minor=invoice.total_minor - invoice.amount_paid_minor,
                    currency=invoice.currency,
                    purpose=INVOICE_PURPOSE,
                    reference_id=invoice.id,
                    description=description,
                    attempt=attempt,
                    stable_reference=stable,
                )
            )
        results = await charge_service.charge_many(session, env, charges)
        for (invoice, attempt), result in zip(invoices, results, strict=True):
            if isinstance(result, PaymentMethodRequired):
                # No card to charge: the attempt fails at once, like a declined card.
                await self._collection_failed(session, env, invoice, attempt=attempt)

    async def finish_renewals(self, session: AsyncSession, env: PaymentEnv) -> None:
        """Make the charges of a renewal chunk's invoices (see :meth:`_collect`)."""
        deferred: list[tuple[Invoice, int]] = session.info.pop(_DEFERRED_CHARGES, [])
        if deferred:
            await self._charge_invoices(session, env, deferred)

    async def _collection_failed(
        self, session: AsyncSession, env: PaymentEnv, invoice: Invoice, *, attempt: int
    ) -> None:
        if invoice.status != "open":
            return
        order = (
            await repository.get_pack_order_by_invoice(session, invoice_id=invoice.id)
            if invoice.billing_reason == "token_pack"
            else None
        )
        if order is not None:
            if order.status == "pending":
                order.status = "failed"
                await outbox.publish(
                    session,
                    "pack_order.failed",
                    {"id": order.id, "invoice_id": invoice.id},
                    organization_id=order.organization_id,
                    occurred_at=env.clock.now(),
                )
            return
        if invoice.subscription_id is None:
            return
        sub = await repository.get_subscription(session, invoice.subscription_id, for_update=True)
        if sub is None or not sub.is_current or sub.status == "canceled":
            return
        if sub.status == "incomplete":
            return  # a first invoice: nothing was granted, the organization stays on Free
        now = env.clock.now()
        policy = await catalog().dunning_policy(session)
        if sub.past_due_since is None:
            sub.past_due_since = now
            sub.grace_ends_at = now + timedelta(days=policy.grace_days)
            await self._set_status(session, env, sub, "past_due")
            await self._set_license(session, env, sub, "grace")
        sub.failed_attempts = max(sub.failed_attempts, attempt)
        if sub.failed_attempts <= len(policy.retry_days):
            days = sum(policy.retry_days[: sub.failed_attempts])
            sub.next_retry_at = sub.past_due_since + timedelta(days=days)
            await self._touch(session, env, sub)
            return
        sub.next_retry_at = None
        await self._touch(session, env, sub)
        if policy.final_status == "canceled":
            await self._end(session, env, sub, at=now, void_open=False, uncollectible=True)
            return
        await self._set_status(session, env, sub, "unpaid")
        if sub.license_state != "restricted":
            await self._set_license(session, env, sub, "restricted")

    async def _invoice_paid(
        self, session: AsyncSession, env: PaymentEnv, invoice: Invoice, payment_minor: int
    ) -> None:
        now = env.clock.now()
        if invoice.status not in ("open", "uncollectible"):
            return
        invoice.status = "paid"
        invoice.paid_at = now
        invoice.amount_paid_minor = min(
            invoice.total_minor, invoice.amount_paid_minor + payment_minor
        )
        audit_service.record(
            session,
            action="invoice.paid",
            target=invoice.id,
            organization_id=invoice.organization_id,
            details={"total": invoice.total_minor},
        )
        await self._publish_invoice(session, env, invoice, "invoice.paid")
        order = (
            await repository.get_pack_order_by_invoice(session, invoice_id=invoice.id)
            if invoice.billing_reason == "token_pack"
            else None
        )
        if order is not None:
            await self._fulfil_order(session, env, order)
            return
        if invoice.subscription_id is None:
            return
        sub = await repository.get_subscription(session, invoice.subscription_id, for_update=True)
        if sub is None or not sub.is_current:
            return
        if await repository.list_open_invoices(session, subscription_id=sub.id):
            return
        if sub.status in ("past_due", "unpaid", "incomplete"):
            if sub.status == "unpaid" and sub.current_period_end <= now:
                # Renewals stopped while unpaid: start a fresh period from today.
                plan = await self._sub_plan(session, sub)
                sub.billing_anchor, sub.period_index = now, 0
                sub.current_period_start, sub.current_period_end = period_bounds(
                    now, 0, plan.interval
                )
            sub.past_due_since = None
            sub.failed_attempts = 0
            sub.next_retry_at = None
            sub.grace_ends_at = None
            await self._set_status(session, env, sub, "active")
            if sub.license_state != "active":
                await self._set_license(session, env, sub, "active")
            else:
                await self._sync_license(session, sub)
        plan = await self._sub_plan(session, sub)
        await self._grant_allotment(session, env, sub, plan)

    async def retry_after_new_card(
        self, session: AsyncSession, env: PaymentEnv, organization_id: str
    ) -> None:
        """A new default card pays what is open right away (Stripe retries on a new card)."""
        sub = await repository.get_current_subscription(
            session, organization_id=organization_id, for_update=True
        )
        if sub is None or sub.status not in ("past_due", "unpaid", "incomplete"):
            return
        await self._collect_open(session, env, sub, attempt=sub.failed_attempts + 1)

    # -- invoices ----------------------------------------------------------------------

    def _base_line(self, plan: PlanTerms, start: datetime, end: datetime) -> LineSpec:
        return LineSpec(
            kind="base",
            description=f"{plan.name} plan ({start:%Y-%m-%d} - {end:%Y-%m-%d})",
            amount_minor=plan.amount_minor,
            unit_amount_minor=plan.amount_minor,
            period_start=start,
            period_end=end,
            reference=plan.id,
        )

    async def _overage_lines(
        self,
        session: AsyncSession,
        sub: Subscription,
        plan: PlanTerms,
        start: datetime,
        end: datetime,
    ) -> list[LineSpec]:
        lines: list[LineSpec] = []
        for price in plan.meter_prices:
            used = await catalog().usage(
                session, sub.organization_id, price.meter, period_start=start, period_end=end
            )
            over = max(0, used - price.included)
            if over == 0 or price.unit_amount_minor == 0:
                continue
            # Whole blocks of per_units, rounded up: 1,001 calls at 1,000 per block is 2 blocks.
            blocks = -(-over // max(1, price.per_units))
            lines.append(
                LineSpec(
                    kind="overage",
                    description=f"{price.meter}: {over} over the {price.included} included",
                    amount_minor=blocks * price.unit_amount_minor,
                    quantity=blocks,
                    unit_amount_minor=price.unit_amount_minor,
                    period_start=start,
                    period_end=end,
                    reference=price.meter,
                )
            )
        return lines

    async def _issue_invoice(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        sub: Subscription | None,
        organization_id: str,
        currency: str,
        reason: str,
        period: tuple[datetime, datetime] | None,
        lines: list[LineSpec],
    ) -> Invoice:
        """Build, tax and finalize an invoice (draft -> open, numbered); paid at once if 0."""
        now = env.clock.now()
        organization = session.info.get(_ORGANIZATIONS, {}).get(
            organization_id
        ) or await account_service.get_organization(session, organization_id)
        country = organization.billing_country.upper() if organization.billing_country else None
        rate = await catalog().tax_rate(session, country)
        subtotal = sum(line.amount_minor for line in lines)
        rate_bp = rate.rate_bp if rate else 0
        inclusive = bool(rate and rate.inclusive)
        if subtotal <= 0 or rate_bp == 0:
            tax = 0
        elif inclusive:
            tax = tax_inclusive(subtotal, rate_bp)
        else:
            tax = tax_exclusive(subtotal, rate_bp)
        total = subtotal if inclusive else subtotal + tax
        settings = env.settings
        # The draft is built and finalized (numbered, open) in this one transaction, so
        # no other transaction ever sees it as a draft; the number is taken last-moment
        # from the locked per-year counter.
        number = await repository.next_number(session, series=f"TW-{now.year}")
        invoice = Invoice(
            id=new_id("inv"),
            number=f"TW-{now.year}-{number:06d}",
            issued_at=now,
            organization_id=organization_id,
            subscription_id=sub.id if sub else None,
            status="open",
            billing_reason=reason,
            currency=currency,
            subtotal_minor=subtotal,
            tax_minor=tax,
            total_minor=max(0, total),
            # Set here, not by the column defaults: the row is read before it is flushed.
            amount_paid_minor=0,
            amount_refunded_minor=0,
            tax_rate_bp=rate_bp,
            tax_inclusive=inclusive,
            tax_country=country,
            period_start=period[0] if period else None,
            period_end=period[1] if period else None,
            parties={
                "seller": {
                    "name": settings.seller_name,
                    "address": settings.seller_address,
                    "tax_id": settings.seller_tax_id,
                },
                "buyer": {
                    "organization_id": organization_id,
                    "name": organization.billing_name or organization.name,
                    "address_lines": list(organization.billing_address or []),
                    "tax_id": organization.billing_tax_id,
                    "email": organization.billing_email,
                    "country": country,
                },
                "tax_name": rate.name if rate else None,
            },
            created_at=now,
        )
        # Written with its lines and the charge's payment by one flush (the charge's).
        await repository.add(session, invoice, flush=False)
        for position, spec in enumerate(lines, start=1):
            session.add(
                InvoiceLine(
                    id=new_id("il"),
                    invoice_id=invoice.id,
                    position=position,
                    kind=spec.kind,
                    description=spec.description[:300],
                    quantity=spec.quantity,
                    unit_amount_minor=spec.unit_amount_minor
                    if spec.unit_amount_minor is not None
                    else spec.amount_minor,
                    amount_minor=spec.amount_minor,
                    period_start=spec.period_start,
                    period_end=spec.period_end,
                    reference=spec.reference,
                )
            )
        await self._publish_invoice(session, env, invoice, "invoice.finalized")
        if invoice.total_minor == 0:
            await self._invoice_paid(session, env, invoice, 0)
        return invoice

    async def list_invoices(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> PageResult[Invoice]:
        return await repository.list_invoices(
            session, organization_id=organization_id, params=params
        )

    async def get_invoice(
        self, session: AsyncSession, *, invoice_id: str, organization_id: str | None
    ) -> InvoiceView:
        invoice = await repository.get_invoice(session, invoice_id, organization_id=organization_id)
        if invoice is None or invoice.status == "draft":
            raise InvoiceNotFound("no such invoice")
        return InvoiceView(
            invoice=invoice,
            lines=await repository.list_lines(session, invoice_id=invoice.id),
            credit_notes=await repository.list_credit_notes(session, invoice_id=invoice.id),
        )

    async def refund_invoice(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        *,
        invoice_id: str,
        amount_minor: int | None,
        reason: str,
    ) -> CreditNote:
        """Refund part or all of a paid invoice: a credit note, the provider's refund, and
        for a token pack its credits taken back in proportion to the amount refunded
        (:func:`refunded_credit_share`), never more than the pack has unspent; the refund
        that completes the invoice's refund takes back all that is unspent."""
        invoice = await repository.get_invoice(session, invoice_id, for_update=True)
        if invoice is None or invoice.status == "draft":
            raise InvoiceNotFound("no such invoice")
        if invoice.status != "paid":
            raise Conflict("only a paid invoice can be refunded", code="invoice_not_paid")
        refundable = invoice.amount_paid_minor - invoice.amount_refunded_minor
        amount = refundable if amount_minor is None else amount_minor
        if amount <= 0 or amount > refundable:
            raise RefundExceedsPaid(
                f"at most {refundable} {invoice.currency} can still be refunded",
                refundable=refundable,
            )
        now = env.clock.now()
        refund_ref: str | None = None
        remaining = amount
        for payment in await charge_service.list_payments_for(
            session, purpose=INVOICE_PURPOSE, reference_id=invoice.id
        ):
            available = payment.amount_minor - payment.refunded_minor
            if payment.status != "succeeded" or available <= 0 or remaining == 0:
                continue
            part = min(available, remaining)
            # Payments counts the refund at once (``refunded_minor``), so that a second
            # refund before the event arrives cannot exceed the payment; the event then
            # records nothing new.
            refund_ref = await refund_service.refund(
                session, env, payment=payment, amount_minor=part
            )
            remaining -= part
        refunded_before = invoice.amount_refunded_minor
        invoice.amount_refunded_minor += amount
        reversed_credits = 0
        order = await repository.get_pack_order_by_invoice(session, invoice_id=invoice.id)
        fully_refunded = invoice.amount_refunded_minor >= invoice.amount_paid_minor
        if order is not None and order.granted_at is not None:
            reference = f"pack:{order.id}"
            if fully_refunded:
                # The refund that completes the invoice's refund takes back everything of
                # the pack still unspent (and what is held from it, when the hold ends).
                reversed_credits = await credits().reverse_unspent(
                    session, order.organization_id, reference=reference, now=now
                )
                order.status = "refunded"
            else:
                share = refunded_credit_share(
                    order.tokens,
                    paid_minor=invoice.amount_paid_minor,
                    refunded_before_minor=refunded_before,
                    refunded_after_minor=invoice.amount_refunded_minor,
                )
                if share > 0:
                    reversed_credits = await credits().reverse_unspent(
                        session,
                        order.organization_id,
                        reference=reference,
                        now=now,
                        amount=share,
                    )
        number = await repository.next_number(session, series=f"CN-{now.year}")
        note = CreditNote(
            id=new_id("cn"),
            number=f"CN-{now.year}-{number:06d}",
            invoice_id=invoice.id,
            organization_id=invoice.organization_id,
            amount_minor=amount,
            currency=invoice.currency,
            reason=reason[:300],
            refund_ref=refund_ref,
            credits_reversed=reversed_credits,
            issued_at=now,
            created_at=now,
        )
        await repository.add(session, note)
        audit_service.record(
            session,
            action="invoice.refunded",
            target=invoice.id,
            organization_id=invoice.organization_id,
            details={
                "amount": amount,
                "credit_note": note.number,
                "credits_reversed": reversed_credits,
            },
        )
        await outbox.publish(
            session,
            "credit_note.issued",
            {
                "id": note.id,
                "number": note.number,
                "invoice_id": invoice.id,
                "amount": amount,
                "currency": invoice.currency,
                "credits_reversed": reversed_credits,
            },
            organization_id=invoice.organization_id,
            occurred_at=now,
        )
        return note

    # -- token packs --------------------------------------------------------------------

    async def purchase_pack(
        self, session: AsyncSession, env: PaymentEnv, *, organization_id: str, pack_id: str
    ) -> PackOrder:
        """Invoice a token pack; charge the default card at once, or open a checkout page."""
        pack = await catalog().get_token_pack(session, pack_id)
        if pack is None:
            raise TokenPackNotFound(f"there is no token pack {pack_id!r}")
        now = env.clock.now()
        order_id = new_id("ord")
        invoice = await self._issue_invoice(
            session,
            env,
            sub=None,
            organization_id=organization_id,
            currency=pack.currency,
            reason="token_pack",
            period=None,
            lines=[
                LineSpec(
                    kind="token_pack",
                    description=f"{pack.name or pack.id}: {pack.tokens} tokens",
                    amount_minor=pack.amount_minor,
                    reference=order_id,
                )
            ],
        )
        order = PackOrder(
            id=order_id,
            organization_id=organization_id,
            pack_id=pack.id,
            tokens=pack.tokens,
            invoice_id=invoice.id,
            status="pending",
            created_at=now,
        )
        await repository.add(session, order)
        audit_service.record(
            session,
            action="pack_order.created",
            target=order.id,
            organization_id=organization_id,
            details={"pack": pack.id, "invoice": invoice.number},
        )
        if invoice.status == "paid":
            await self._fulfil_order(session, env, order)
            return order
        method = await payment_method_service.default_method(
            session, env, organization_id=organization_id
        )
        if method is not None:
            await self._collect(session, env, invoice, attempt=1)
            return order
        checkout = await checkout_service.start_checkout(
            session,
            env,
            organization_id=organization_id,
            amount_minor=invoice.total_minor,
            currency=invoice.currency,
            purpose=INVOICE_PURPOSE,
            reference_id=invoice.id,
            description=f"{pack.tokens} tokens ({invoice.number})",
        )
        order.checkout_url = checkout.url
        await session.flush()
        return order

    async def _fulfil_order(self, session: AsyncSession, env: PaymentEnv, order: PackOrder) -> None:
        if order.granted_at is not None:
            return
        now = env.clock.now()
        await credits().grant(
            session,
            order.organization_id,
            amount=order.tokens,
            source="purchase",
            reference=f"pack:{order.id}",
            expires_at=None,
            now=now,
            reason=f"token pack {order.pack_id} ({order.id})",
        )
        order.status = "paid"
        order.granted_at = now
        await session.flush()
        await outbox.publish(
            session,
            "pack_order.paid",
            {"id": order.id, "tokens": order.tokens},
            organization_id=order.organization_id,
            occurred_at=now,
        )

    # -- helpers -----------------------------------------------------------------------

    async def _plan(
        self, session: AsyncSession, plan_id: str, version: int | None = None
    ) -> PlanTerms:
        plan = await catalog().get_plan(session, plan_id, version=version)
        if plan is None:
            raise UnknownPlan(f"the plan {plan_id!r} is no longer in the catalog")
        return plan

    async def _sub_plan(self, session: AsyncSession, sub: Subscription) -> PlanTerms:
        """The subscription's plan at the prices of the catalog version it was priced at
        (a later catalog never re-prices it: base fee, trial, tokens and overage)."""
        return await self._plan(session, sub.plan_id, sub.catalog_version)

    async def _grant_allotment(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, plan: PlanTerms
    ) -> None:
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

    async def _grant_upgrade_tokens(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        sub: Subscription,
        old: PlanTerms,
        new: PlanTerms,
    ) -> None:
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

    async def _take_back_trial_credits(
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

    async def _sync_license(self, session: AsyncSession, sub: Subscription) -> None:
        if sub.status == "incomplete":
            return
        await catalog().assign_plan(
            session,
            sub.organization_id,
            sub.plan_id,
            license_state=cast(LicenseState, sub.license_state),
            grace_ends_at=sub.grace_ends_at,
        )

    async def _set_status(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, status: str
    ) -> None:
        if sub.status == status:
            return
        previous, sub.status = sub.status, status
        await self._touch(session, env, sub)
        await self._publish(session, env, sub, f"subscription.{status}", previous_status=previous)

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
        await self._set_license(session, env, sub, natural)

    async def _set_license(
        self, session: AsyncSession, env: PaymentEnv, sub: Subscription, state: str
    ) -> None:
        if state != "canceled" and await dispute_service.access_frozen(
            session, organization_id=sub.organization_id
        ):
            state = "restricted"  # a dispute is open or was lost
        if sub.license_state == state:
            return
        previous, sub.license_state = sub.license_state, state
        await self._touch(session, env, sub)
        await self._sync_license(session, sub)
        if state == "grace":
            await credits().release_open_holds(session, sub.organization_id, now=env.clock.now())
        audit_service.record(
            session,
            action="license.state_changed",
            target=sub.id,
            organization_id=sub.organization_id,
            details={"from": previous, "to": state},
        )
        await self._publish(
            session, env, sub, "license.state_changed", state=state, previous_state=previous
        )

    async def _touch(self, session: AsyncSession, env: PaymentEnv, sub: Subscription) -> None:
        # No flush: the row is written once, by the next query's autoflush or the commit.
        sub.updated_at = env.clock.now()

    async def _publish(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        sub: Subscription,
        event_type: str,
        **extra: Any,
    ) -> None:
        payload: dict[str, Any] = {
            "id": sub.id,
            "plan": sub.plan_id,
            "status": sub.status,
            "license_state": sub.license_state,
            "current_period_start": sub.current_period_start.isoformat(),
            "current_period_end": sub.current_period_end.isoformat(),
            **extra,
        }
        await outbox.publish(
            session,
            event_type,
            payload,
            organization_id=sub.organization_id,
            occurred_at=env.clock.now(),
        )

    async def _publish_invoice(
        self, session: AsyncSession, env: PaymentEnv, invoice: Invoice, event_type: str
    ) -> None:
        await outbox.publish(
            session,
            event_type,
            {
                "id": invoice.id,
                "number": invoice.number,
                "status": invoice.status,
                "total": invoice.total_minor,
                "currency": invoice.currency,
            },
            organization_id=invoice.organization_id,
            occurred_at=env.clock.now(),
        )


class InvoicePayments:
    """Told by payments when a charge for an invoice succeeded or failed."""

    async def read_ahead(
        self, session: AsyncSession, env: PaymentEnv, payments: list[Payment]
    ) -> None:
        """Lock and read what the events of these payments will need (their invoices,
        subscriptions, the organizations' ledger accounts and allotments) in a few
        queries instead of several per event: a chunk of the events a billing run made."""
        held = await repository.read_ahead(
            session, invoice_ids=[payment.reference_id for payment in payments]
        )
        periods = sorted(
            {(sub.organization_id, sub.current_period_start) for sub in held.subscriptions.values()}
        )
        await credits().prepare_allotments(session, periods)

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        invoice = await repository.get_invoice(session, payment.reference_id, for_update=True)
        if invoice is None:
            log.warning("billing.payment_for_unknown_invoice", payment=payment.id)
            return
        await billing_service._invoice_paid(session, env, invoice, payment.amount_minor)

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        invoice = await repository.get_invoice(session, payment.reference_id, for_update=True)
        if invoice is None:
            log.warning("billing.payment_for_unknown_invoice", payment=payment.id)
            return
        await billing_service._collection_failed(session, env, invoice, attempt=payment.attempt)

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        """Nothing: an invoice refund is made by :meth:`BillingService.refund_invoice`,
        which issues the credit note and takes token-pack credits back itself (it is
        also what asked payments for the refund, so handling it here would count it
        twice). A refund made in the provider's dashboard is recorded on the payment
        only, as before this hook existed: no credit note, credits stay."""


billing_service = BillingService()
#: Entered in payments' listeners by :mod:`tollway.wiring`.
invoice_payments = InvoicePayments()
