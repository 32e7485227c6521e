"""The billing domain's errors (each a ``TollwayError`` with a stable ``code``)."""

from __future__ import annotations

from tollway.errors import Conflict, NotFound, Unprocessable


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
