"""The one place where domains are told about each other at start-up.

Payments knows nothing of invoices or package purchases: it keeps maps of listeners
(by payment purpose, for new default payment methods, for access frozen or restored
by a dispute) and the domains that sell things are entered in them here, explicitly,
instead of by the side effect of importing a module. :func:`wire` is called by
:func:`tollway.registry.load_domains`, which ``create_app`` and every CLI command that
runs domain code call; calling it again changes nothing.
"""

from __future__ import annotations


def wire() -> None:
    """Fill the cross-domain listener maps (idempotent)."""
    from tollway.billing.service.base import INVOICE_PURPOSE
    from tollway.billing.service.collection import collection_service, invoice_payments
    from tollway.billing.service.license import license_state_service
    from tollway.marketplace.service.sales import PURCHASE_PURPOSE, marketplace_payments
    from tollway.payments.listeners import (
        register_access_listener,
        register_method_listener,
        register_purpose,
        register_read_ahead,
    )

    register_purpose(INVOICE_PURPOSE, invoice_payments)
    register_read_ahead(INVOICE_PURPOSE, invoice_payments.read_ahead)
    register_method_listener(collection_service.retry_after_new_card)
    register_access_listener(license_state_service.access_changed)
    register_purpose(PURCHASE_PURPOSE, marketplace_payments)
