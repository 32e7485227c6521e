"""What a transaction read ahead for the payments it is about to touch.

A billing sweep's chunk charges a hundred renewals, and a webhook chunk applies a
hundred events, in one transaction each; reading the cards, customers and payments
they need once per chunk, instead of once per charge or event, is most of their
speed. The readings live in the session for that transaction only.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.session_state import SessionKey
from tollway.payments.models import Payment, PaymentMethod


@dataclass(slots=True)
class PreparedCharges:
    """Read by :meth:`~tollway.payments.service.charges.ChargeService.prepare_charges`;
    each entry serves one charge and is removed when used."""

    #: Organization ID -> its default card and provider customer reference (None:
    #: no card).
    cards: dict[str, tuple[PaymentMethod, str | None] | None]
    #: Idempotency scope -> how many payments it already has.
    payments_in_scope: dict[str, int]


PREPARED_CHARGES: SessionKey[PreparedCharges] = SessionKey("payments.prepared_charges")

#: Payments locked by the webhook queue's read-ahead, by ID and by idempotency key.
READ_PAYMENTS: SessionKey[dict[str, Payment]] = SessionKey("payments.read_payments")


def forget_prepared_cards(session: AsyncSession) -> None:
    """A saved card or customer changed: charges read them again."""
    prepared = PREPARED_CHARGES.get(session)
    if prepared is not None:
        prepared.cards.clear()
