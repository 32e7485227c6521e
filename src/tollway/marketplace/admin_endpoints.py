"""The operators' marketplace API (platform admins): refunds of sales."""

from __future__ import annotations

from tollway.auth.dependencies import AdminPrincipal
from tollway.kit.routing import SessionDep, api_router
from tollway.marketplace.schemas import OrderRefundIn, PurchaseOut
from tollway.marketplace.service.sales import sales_service
from tollway.payments.dependencies import PaymentEnvDep

router = api_router(prefix="/api/v1/admin/marketplace", tags=["marketplace"])


@router.post("/orders/{order_id}/refund")
async def refund_order(
    order_id: str,
    body: OrderRefundIn,
    _admin: AdminPrincipal,
    session: SessionDep,
    env: PaymentEnvDep,
) -> PurchaseOut:
    """Refund part or all of a paid marketplace order (a purchase; platform admins) through
    the payment provider: `amount` in minor units, omitted: all that is left.

    The author's earning is reversed in proportion to the amount (the commission's share
    rounded half up on the running total, the author's net the exact rest, so the two
    add up to the amount and a full refund reverses exactly the sale's commission and
    net). A full refund revokes the buyer's package: `status: "refunded"`, downloads
    answer 402 `purchase_required`. The provider's `charge.refunded` event for the same
    refund changes nothing more.

    Errors: unknown order 404 `order_not_found`; free or unpaid order 409
    `order_not_paid`; `amount` ≤ 0 or above what is left 422 `refund_exceeds_paid`
    (with `refundable`)."""
    purchase = await sales_service.refund_order(
        session, env, order_id=order_id, amount_minor=body.amount
    )
    return PurchaseOut.of(purchase)
