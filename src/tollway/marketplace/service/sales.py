"""Sales: purchases, refunds and the authors' earnings.

Acquiring a package (``purchase``) counts against the plan's ``templates`` limit
through the entitlements decision. A free package is granted at once; a paid one
creates a payment (a charge of the default card, else a checkout page) and is
granted only when payments tells :class:`MarketplacePayments` that the payment
succeeded - the webhook path - which also books the author's earning and the
platform's commission.

Refunds (an operator's ``refund_order``, or one made at the provider and reported by
``charge.refunded``) reach :meth:`SalesService.payment_refunded` once per increase of
the payment's refunded total: the earning is reversed in proportion
(:func:`reversal_shares`) and a full refund revokes the buyer's entitlement.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.audit.service import audit_service
from tollway.entitlements.service import EntitlementsRuntime, entitlements_service
from tollway.errors import Forbidden, PaymentRequired, RateLimited, TollwayError
from tollway.kit.ids import new_id
from tollway.kit.money import Money, split_by_running_total
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.marketplace import repository
from tollway.marketplace.errors import (
    OrderNotFound,
    OrderNotPaid,
    OwnPackage,
    PackageUnavailable,
)
from tollway.marketplace.models import Earning, Package, Purchase
from tollway.marketplace.service.env import MarketEnv
from tollway.marketplace.service.listing import listing_service
from tollway.payments.env import PaymentEnv
from tollway.payments.errors import RefundExceedsPaid
from tollway.payments.models import Payment
from tollway.payments.service.charges import charge_service
from tollway.payments.service.checkout import checkout_service
from tollway.payments.service.methods import payment_method_service
from tollway.payments.service.refunds import refund_service
from tollway.plans.service.catalog import catalog_service

log = structlog.get_logger("tollway.marketplace")

PURCHASE_PURPOSE = "marketplace_purchase"
TEMPLATES_FEATURE = "templates.install"
#: How deep the free dependencies of a purchase are followed (resolution has its own limits).
MAX_DEPENDENCY_DEPTH = 20


@dataclass(frozen=True, slots=True)
class EarningsView:
    totals: list[repository.EarningTotals]
    page: PageResult[Earning]


def sale_shares(gross: int, *, commission_percent: Decimal) -> tuple[int, int]:
    """(the platform's commission, the author's net) of a sale of ``gross``.

    The commission is ``gross x commission_percent / 100`` rounded half up to the minor
    unit; the author gets the exact rest, so commission + net is always the gross.
    """
    numerator, denominator = commission_percent.as_integer_ratio()
    commission, net = split_by_running_total(gross, [numerator, 100 * denominator - numerator])
    return commission, net


def reversal_shares(
    *, gross: int, commission: int, refunded_before: int, refunded_after: int
) -> tuple[int, int]:
    """(commission reversed, net reversed) by a refund from ``refunded_before`` to
    ``refunded_after`` of a sale of ``gross`` whose commission was ``commission``.

    The commission reversed is rounded half up on the running total - the way the
    sale's commission was rounded: round_half_up(commission x refunded so far / gross)
    less the same figure before this refund - and the author's net takes the exact
    rest, so each refund's two shares add up to the amount refunded, and a full refund
    reverses exactly the commission and the net booked. 19.99 with 3.00 commission,
    refunded 10.00 then 9.99: commission 1.50 + net 8.50, then 1.50 + 8.49.
    """
    if gross <= 0:
        return 0, 0
    after = min(refunded_after, gross)
    before = min(refunded_before, after)
    # The commission shared over (refunded before, this refund, not refunded) of the gross.
    commission_share = split_by_running_total(commission, [before, after - before, gross - after])[
        1
    ]
    return commission_share, (after - before) - commission_share


class SalesService:
    async def purchase(
        self,
        session: AsyncSession,
        env: MarketEnv,
        runtime: EntitlementsRuntime,
        *,
        organization_id: str,
        subject: str,
        package_ref: str,
        spending_refusal: TollwayError | None = None,
    ) -> Purchase:
        """Acquire a package: free at once, paid through payments. Buying what you own
        answers the existing purchase. ``spending_refusal`` is why the caller may not
        charge the saved card (raised for a paid package only)."""
        view = await listing_service.visible(session, package_ref, organization_id=organization_id)
        package = view.package
        if package.organization_id == organization_id:
            raise OwnPackage("an author organization has access to its own packages")
        if not any(v.state in ("published", "deprecated") for v in view.versions):
            raise PackageUnavailable(f"{package.name} has no version that can be acquired")
        existing = await repository.get_live_purchase(
            session, package_id=package.id, organization_id=organization_id
        )
        if existing is not None:
            return existing
        if spending_refusal is not None and not package.is_free:
            raise spending_refusal
        await self._count_acquisition(
            session, runtime, organization_id=organization_id, subject=subject, package=package
        )
        now = env.clock.now()
        purchase = Purchase(
            id=new_id("mpp"),
            package_id=package.id,
            organization_id=organization_id,
            status="pending",
            open_key=f"{package.id}:{organization_id}",
            price_minor=package.price_minor,
            currency=package.currency,
            created_at=now,
        )
        await repository.add(session, purchase)
        audit_service.record(
            session,
            action="marketplace_purchase.created",
            target=purchase.id,
            organization_id=organization_id,
            details={
                "package": package.name,
                "price": package.price_minor,
                "currency": package.currency,
            },
        )
        if package.is_free:
            await self._complete(session, env.payments, purchase, package=package)
            return purchase
        assert package.currency is not None
        payments = env.payments
        description = f"{package.name} (marketplace)"
        method = await payment_method_service.default_method(
            session, payments, organization_id=organization_id
        )
        if method is not None:
            payment = await charge_service.charge(
                session,
                payments,
                organization_id=organization_id,
                amount_minor=package.price_minor,
                currency=package.currency,
                purpose=PURCHASE_PURPOSE,
                reference_id=purchase.id,
                description=description,
            )
            purchase.payment_id = payment.id
        else:
            checkout = await checkout_service.start_checkout(
                session,
                payments,
                organization_id=organization_id,
                amount_minor=package.price_minor,
                currency=package.currency,
                purpose=PURCHASE_PURPOSE,
                reference_id=purchase.id,
                description=description,
            )
            purchase.payment_id = checkout.payment_id
            purchase.checkout_url = checkout.url
        await session.flush()
        return purchase

    async def _count_acquisition(
        self,
        session: AsyncSession,
        runtime: EntitlementsRuntime,
        *,
        organization_id: str,
        subject: str,
        package: Package,
    ) -> None:
        """The plan's ``templates`` limit: each distinct package acquired counts once."""
        if TEMPLATES_FEATURE not in catalog_service.catalog.features:
            return
        decision = await entitlements_service.decide(
            runtime,
            organization_id=organization_id,
            subject=subject,
            feature=TEMPLATES_FEATURE,
            properties={"template_id": package.id},
            idempotency_key=f"marketplace:{organization_id}:{package.id}",
            source="marketplace",
            session=session,
        )
        if decision.allowed:
            return
        detail = decision.detail or "the plan does not allow another package"
        if decision.code == "rate_limited":
            raise RateLimited(detail, retry_after=decision.retry_after or 1)
        if decision.code in ("feature_not_in_plan", "license_degraded"):
            raise Forbidden(detail, code=decision.code)
        raise PaymentRequired(detail, code=decision.code or "quota_exceeded")

    async def _acquire_dependencies(
        self, session: AsyncSession, env: PaymentEnv, purchase: Purchase, *, package: Package
    ) -> None:
        """The free packages the chosen one needs come with its purchase, uncounted.

        Walks the dependencies of the newest release of each package, breadth first
        (a cycle ends where a name was seen). A free dependency the organization neither
        wrote nor owns gets a completed purchase of its own, recorded as acquired with
        ``purchase``; the ``templates`` limit counts only what the customer chose. A paid
        dependency is not bought on the customer's behalf: it needs its own purchase
        (and then counts); the free packages below it still come along now.
        """
        organization_id = purchase.organization_id
        seen = {package.name}
        frontier = [package]
        for _ in range(MAX_DEPENDENCY_DEPTH):
            names: set[str] = set()
            for current in frontier:
                if current.latest_version is None:
                    continue
                row = await repository.get_version(
                    session, package_id=current.id, version=current.latest_version
                )
                if row is not None:
                    names.update(dep["name"] for dep in row.dependencies)
            names -= seen
            if not names:
                return
            seen |= names
            frontier = await repository.list_packages_by_names(session, names)
            for dependency in frontier:
                if not dependency.is_free or dependency.organization_id == organization_id:
                    continue
                if await repository.get_live_purchase(
                    session, package_id=dependency.id, organization_id=organization_id
                ):
                    continue
                acquired = Purchase(
                    id=new_id("mpp"),
                    package_id=dependency.id,
                    organization_id=organization_id,
                    status="pending",
                    open_key=f"{dependency.id}:{organization_id}",
                    price_minor=0,
                    currency=None,
                    created_at=env.clock.now(),
                )
                await repository.add(session, acquired)
                await self._complete(
                    session, env, acquired, package=dependency, acquired_with=purchase
                )

    async def _complete(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        purchase: Purchase,
        *,
        package: Package,
        acquired_with: Purchase | None = None,
    ) -> None:
        now = env.clock.now()
        purchase.status = "completed"
        purchase.completed_at = now
        purchase.open_key = f"{purchase.package_id}:{purchase.organization_id}"
        await session.flush()
        if purchase.price_minor > 0 and purchase.currency is not None:
            await self._book_earning(session, env, purchase, package=package)
        audit_service.record(
            session,
            action="marketplace_purchase.completed",
            target=purchase.id,
            organization_id=purchase.organization_id,
            details={
                "package": package.name,
                "price": purchase.price_minor,
                "acquired_with": acquired_with.id if acquired_with else None,
            },
        )
        await outbox.publish(
            session,
            "marketplace_purchase.completed",
            {
                "id": purchase.id,
                "package_id": package.id,
                "package": package.name,
                "price": purchase.price_minor,
                "currency": purchase.currency,
                "acquired_with": acquired_with.id if acquired_with else None,
            },
            organization_id=purchase.organization_id,
            occurred_at=now,
        )
        if acquired_with is None:
            await self._acquire_dependencies(session, env, purchase, package=package)

    async def _book_earning(
        self, session: AsyncSession, env: PaymentEnv, purchase: Purchase, *, package: Package
    ) -> None:
        if await repository.get_earning_by_purchase(session, purchase_id=purchase.id):
            return
        assert purchase.currency is not None
        percent = catalog_service.commission_percent()
        gross = Money(purchase.price_minor, purchase.currency)
        commission, net = sale_shares(gross.amount_minor, commission_percent=percent)
        now = env.clock.now()
        earning = Earning(
            id=new_id("ern"),
            purchase_id=purchase.id,
            package_id=package.id,
            organization_id=package.organization_id,
            buyer_organization_id=purchase.organization_id,
            gross_minor=gross.amount_minor,
            commission_minor=commission,
            net_minor=net,
            currency=gross.currency,
            commission_percent=str(percent),
            booked_at=now,
            created_at=now,
        )
        await repository.add(session, earning)
        audit_service.record(
            session,
            action="marketplace_earning.booked",
            target=earning.id,
            organization_id=package.organization_id,
            details={
                "purchase": purchase.id,
                "gross": earning.gross_minor,
                "commission": earning.commission_minor,
                "net": earning.net_minor,
                "currency": earning.currency,
            },
        )

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        purchase = await repository.get_purchase(session, payment.reference_id, for_update=True)
        if purchase is None:
            log.warning("marketplace.payment_for_unknown_purchase", payment=payment.id)
            return
        if purchase.status == "completed":
            return
        if purchase.status == "failed":
            other = await repository.get_live_purchase(
                session, package_id=purchase.package_id, organization_id=purchase.organization_id
            )
            if other is not None:
                # Paid twice (a late success after a retry): the operator refunds one.
                log.error("marketplace.duplicate_payment", purchase=purchase.id, other=other.id)
                return
        package = await repository.get_package(session, purchase.package_id)
        assert package is not None
        await self._complete(session, env, purchase, package=package)

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        purchase = await repository.get_purchase(session, payment.reference_id, for_update=True)
        if purchase is None or purchase.status != "pending":
            return
        purchase.status = "failed"
        purchase.failed_at = env.clock.now()
        purchase.open_key = None
        await session.flush()
        await outbox.publish(
            session,
            "marketplace_purchase.failed",
            {"id": purchase.id, "package_id": purchase.package_id},
            organization_id=purchase.organization_id,
            occurred_at=env.clock.now(),
        )

    # -- refunds --------------------------------------------------------------------

    async def refund_order(
        self, session: AsyncSession, env: PaymentEnv, *, order_id: str, amount_minor: int | None
    ) -> Purchase:
        """Refund part or all of a paid order through payments (the provider's refund);
        ``amount_minor`` omitted: all that is left. The reversal and, on a full refund,
        the revoked entitlement happen in this transaction (payments tells
        :meth:`payment_refunded`); the provider's ``charge.refunded`` for it then
        changes nothing."""
        # Locks in the webhook path's order: the payment first, then (in
        # payment_refunded) the purchase.
        purchase = await repository.get_purchase(session, order_id)
        if purchase is None:
            raise OrderNotFound(f"no marketplace order {order_id[:60]!r}")
        payment = (
            await charge_service.get_payment(session, purchase.payment_id, for_update=True)
            if purchase.payment_id is not None
            else None
        )
        if payment is None or payment.status != "succeeded":
            raise OrderNotPaid("only a paid order can be refunded (free or not yet paid)")
        refundable = payment.amount_minor - payment.refunded_minor
        amount = refundable if amount_minor is None else amount_minor
        if amount <= 0 or amount > refundable:
            raise RefundExceedsPaid(
                f"at most {refundable} {payment.currency} can still be refunded",
                refundable=refundable,
            )
        refund_ref = await refund_service.refund(session, env, payment=payment, amount_minor=amount)
        audit_service.record(
            session,
            action="marketplace_order.refunded",
            target=purchase.id,
            organization_id=purchase.organization_id,
            details={
                "amount": amount,
                "currency": payment.currency,
                "refunded_total": payment.refunded_minor,
                "refund_ref": refund_ref,
                "payment": payment.id,
            },
        )
        return purchase

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        """The sale's payment was refunded up to ``payment.refunded_minor``: reverse the
        earning's share of the new amount and, once refunded in full, revoke the
        entitlement. Figures are set from the payment's total, so nothing is reversed
        twice even if called again."""
        purchase = await repository.get_purchase(session, payment.reference_id, for_update=True)
        if purchase is None:
            log.warning("marketplace.refund_for_unknown_purchase", payment=payment.id)
            return
        if purchase.payment_id != payment.id:
            # A payment this purchase no longer points at (an earlier attempt): its
            # money is returned, the sale booked on the current payment stays.
            log.warning("marketplace.refund_of_other_payment", purchase=purchase.id)
            return
        now = env.clock.now()
        purchase.refunded_minor = max(purchase.refunded_minor, payment.refunded_minor)
        earning = await repository.get_earning_by_purchase(session, purchase_id=purchase.id)
        if earning is not None:
            await self._reverse_earning(session, earning, refunded_total=payment.refunded_minor)
        if payment.refunded_minor >= payment.amount_minor and purchase.status == "completed":
            purchase.status = "refunded"
            purchase.refunded_at = now
            purchase.open_key = None
            audit_service.record(
                session,
                action="marketplace_purchase.revoked",
                target=purchase.id,
                organization_id=purchase.organization_id,
                details={"package_id": purchase.package_id, "refunded": payment.refunded_minor},
            )
            await outbox.publish(
                session,
                "marketplace_purchase.refunded",
                {
                    "id": purchase.id,
                    "package_id": purchase.package_id,
                    "refunded": payment.refunded_minor,
                    "currency": payment.currency,
                },
                organization_id=purchase.organization_id,
                occurred_at=now,
            )
        await session.flush()

    async def _reverse_earning(
        self, session: AsyncSession, earning: Earning, *, refunded_total: int
    ) -> None:
        after = min(refunded_total, earning.gross_minor)
        if after <= earning.refunded_minor:
            return
        commission, net = reversal_shares(
            gross=earning.gross_minor,
            commission=earning.commission_minor,
            refunded_before=earning.refunded_minor,
            refunded_after=after,
        )
        amount = after - earning.refunded_minor
        earning.refunded_minor = after
        earning.commission_reversed_minor += commission
        earning.net_reversed_minor += net
        audit_service.record(
            session,
            action="marketplace_earning.reversed",
            target=earning.id,
            organization_id=earning.organization_id,
            details={
                "purchase": earning.purchase_id,
                "refunded": amount,
                "commission_reversed": commission,
                "net_reversed": net,
                "currency": earning.currency,
            },
        )

    async def list_purchases(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> PageResult[Purchase]:
        return await repository.list_purchases(
            session, organization_id=organization_id, params=params
        )

    async def earnings(
        self, session: AsyncSession, *, organization_id: str, params: PageParams
    ) -> EarningsView:
        return EarningsView(
            totals=await repository.earning_totals(session, organization_id=organization_id),
            page=await repository.list_earnings(
                session, organization_id=organization_id, params=params
            ),
        )


class MarketplacePayments:
    """Told by payments when a purchase's payment succeeded, failed or was refunded."""

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        await sales_service.payment_succeeded(session, env, payment)

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None:
        await sales_service.payment_failed(session, env, payment)

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        await sales_service.payment_refunded(
            session, env, payment, refunded_minor_before=refunded_minor_before
        )


sales_service = SalesService()
#: Entered in payments' listeners by :mod:`tollway.wiring`.
marketplace_payments = MarketplacePayments()
