"""The owners of payments, entered at start-up by :mod:`tollway.wiring`.

Payments knows nothing of invoices or package purchases. The domains that sell things
enter here a :class:`PaymentListener` per payment ``purpose`` (told once about each
transition and each increase of ``refunded_minor``), optionally a read-ahead for a
chunk of webhook events, a listener for a new default payment method, and one for an
organization's access frozen or restored by a dispute.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.payments.env import PaymentEnv
from tollway.payments.models import Payment


class PaymentListener(Protocol):
    """The owner of a payment purpose, told once about each state transition."""

    async def payment_succeeded(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None: ...

    async def payment_failed(
        self, session: AsyncSession, env: PaymentEnv, payment: Payment
    ) -> None: ...

    async def payment_refunded(
        self,
        session: AsyncSession,
        env: PaymentEnv,
        payment: Payment,
        *,
        refunded_minor_before: int,
    ) -> None:
        """``payment.refunded_minor`` grew from ``refunded_minor_before``: called exactly
        once per increase (repeated or out-of-order events raise nothing twice)."""
        ...


#: Called after an organization got a new default payment method (billing retries
#: open invoices then).
MethodListener = Callable[[AsyncSession, PaymentEnv, str], Awaitable[None]]
#: Called when an organization's access was frozen by a dispute or restored.
AccessListener = Callable[[AsyncSession, PaymentEnv, str], Awaitable[None]]
#: Reads ahead, for a chunk of stored events, what a purpose's listener will need.
ReadAhead = Callable[[AsyncSession, PaymentEnv, list[Payment]], Awaitable[None]]

_LISTENERS: dict[str, PaymentListener] = {}
_METHOD_LISTENERS: list[MethodListener] = []
_ACCESS_LISTENERS: list[AccessListener] = []
_READ_AHEADS: dict[str, ReadAhead] = {}


def register_purpose(purpose: str, listener: PaymentListener) -> None:
    _LISTENERS[purpose] = listener


def register_read_ahead(purpose: str, read_ahead: ReadAhead) -> None:
    """``read_ahead`` reads, for a chunk of events about payments of ``purpose``, what
    their listener will need (optional: the listener reads it itself otherwise)."""
    _READ_AHEADS[purpose] = read_ahead


def register_method_listener(listener: MethodListener) -> None:
    if listener not in _METHOD_LISTENERS:
        _METHOD_LISTENERS.append(listener)


def register_access_listener(listener: AccessListener) -> None:
    if listener not in _ACCESS_LISTENERS:
        _ACCESS_LISTENERS.append(listener)


def purpose_listener(purpose: str) -> PaymentListener | None:
    """The listener of payments of ``purpose`` (None: nobody owns them)."""
    return _LISTENERS.get(purpose)


def read_aheads() -> dict[str, ReadAhead]:
    return dict(_READ_AHEADS)


def method_listeners() -> tuple[MethodListener, ...]:
    return tuple(_METHOD_LISTENERS)


def access_listeners() -> tuple[AccessListener, ...]:
    return tuple(_ACCESS_LISTENERS)
