"""Exact arithmetic for billing: calendar periods, proration, tax.

Every computed amount is rounded by the one rule of :mod:`tollway.kit.money` (half
up, from the exact rational value), once per invoice line, and tax is computed once
on the invoice's subtotal. No float is involved.
"""

from __future__ import annotations

import calendar
from datetime import datetime

from tollway.kit.money import round_half_up


def add_months(moment: datetime, months: int) -> datetime:
    """The same day and time ``months`` later; a day past the month's end clamps to it."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def period_bounds(anchor: datetime, index: int, interval: str) -> tuple[datetime, datetime]:
    """Period ``index`` (0-based) of a subscription anchored at ``anchor``."""
    step = 12 if interval == "year" else 1
    return add_months(anchor, index * step), add_months(anchor, (index + 1) * step)


def prorate(amount_minor: int, *, remaining_seconds: int, period_seconds: int) -> int:
    """The share of ``amount_minor`` for the remaining part of a period."""
    remaining = max(0, min(remaining_seconds, period_seconds))
    return round_half_up(amount_minor * remaining, period_seconds)


def tax_exclusive(subtotal_minor: int, rate_bp: int) -> int:
    """Tax added on top of a subtotal (rate in basis points)."""
    return round_half_up(subtotal_minor * rate_bp, 10_000)


def tax_inclusive(total_minor: int, rate_bp: int) -> int:
    """The tax contained in a tax-inclusive total: total - total / (1 + rate)."""
    return total_minor - round_half_up(total_minor * 10_000, 10_000 + rate_bp)
