"""Bounded whole numbers: every quantity, credit amount and sum of money a client sends.

The database stores them as 64-bit integers (and orjson writes nothing larger), so an
unbounded ``int`` from a request could overflow a column or a sum of them and answer
500. Each kind has an upper bound chosen so that the sums Tollway keeps (a wallet, a
period's usage counter, an invoice) stay far below 2^63 (about 9.2 * 10^18):

=======================  =========  ===================================================
bound                    value      what it limits
=======================  =========  ===================================================
``MAX_QUANTITY``         10^12      units in one usage event or one authorize decision
``MAX_USAGE_PER_PERIOD`` 10^15      a meter's counter in one period (and a quota)
``MAX_CREDITS``          10^12      credits in one request: a hold, a commit, a grant
``MAX_BALANCE``          10^13      an organization's credit balance (grants beyond it
                                    are refused with 409 ``balance_limit_exceeded``)
``MAX_AMOUNT_MINOR``     10^12      money in minor units in one price or refund
=======================  =========  ===================================================

The annotated types are strict: a JSON string (``"5"``), a boolean (``true``) or a
fraction (``5.0``) is not a number of units and answers 422 like a value above the
bound does (``validation_error``, naming the field). Services check the same bounds
for callers that do not come through a schema (the CLI, other domains). docs/errors.md
lists them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_QUANTITY = 10**12
MAX_USAGE_PER_PERIOD = 10**15
MAX_CREDITS = 10**12
MAX_BALANCE = 10**13
MAX_AMOUNT_MINOR = 10**12

#: Units of a meter in one event or decision (the lower bound is the field's own).
Quantity = Annotated[int, Field(strict=True, le=MAX_QUANTITY)]
#: A quota or usage figure of one period.
UsageTotal = Annotated[int, Field(strict=True, le=MAX_USAGE_PER_PERIOD)]
#: Credits in one request (a hold, a commit, a grant, an abuse threshold).
Credits = Annotated[int, Field(strict=True, le=MAX_CREDITS)]
#: Money in minor units (cents) in one price, line or refund.
AmountMinor = Annotated[int, Field(strict=True, le=MAX_AMOUNT_MINOR)]
#: Any other count a client sends (seconds, requests a minute, ...): strict, and small
#: enough for every column and time computation.
Count = Annotated[int, Field(strict=True, le=10**9)]


def is_whole(value: object) -> bool:
    """A real ``int`` (``bool`` is one to Python, not to us)."""
    return isinstance(value, int) and not isinstance(value, bool)
