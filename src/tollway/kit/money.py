"""Money as an integer of minor units plus a lowercase ISO 4217 currency.

Never a float: amounts are ``int`` in the currency's smallest unit (cents for usd,
yen for jpy). Unit prices that need fractions of a minor unit are ``Decimal`` and
are rounded once, explicitly, by :meth:`Money.from_decimal`.

The rounding rule, the only one in Tollway: an amount computed from an exact rational
value is rounded **half up** (half away from zero), once (:func:`round_half_up`). When
an amount is shared out (a commission and the author's part, a refund over lots) the
parts come from a running total (:func:`split_by_running_total`), so they always add
up to the whole and each is within one minor unit of its exact share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from tollway.errors import Unprocessable

#: The ISO 4217 codes of money (list one, current currencies), lowercase. Left out: the
#: codes of funds (``bov``, ``usn`` ...), precious metals (``xau``), special drawing
#: rights and bond units (``xdr``, ``xba`` ...), testing (``xts``) and no currency
#: (``xxx``): nothing is priced or paid in them.
ISO_4217_CURRENCIES = frozenset(
    {
        "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd",
        "bdt", "bgn", "bhd", "bif", "bmd", "bnd", "bob", "brl", "bsd", "btn", "bwp", "byn",
        "bzd", "cad", "cdf", "chf", "clp", "cny", "cop", "crc", "cup", "cve", "czk", "djf",
        "dkk", "dop", "dzd", "egp", "ern", "etb", "eur", "fjd", "fkp", "gbp", "gel", "ghs",
        "gip", "gmd", "gnf", "gtq", "gyd", "hkd", "hnl", "htg", "huf", "idr", "ils", "inr",
        "iqd", "irr", "isk", "jmd", "jod", "jpy", "kes", "kgs", "khr", "kmf", "kpw", "krw",
        "kwd", "kyd", "kzt", "lak", "lbp", "lkr", "lrd", "lsl", "lyd", "mad", "mdl", "mga",
        "mkd", "mmk", "mnt", "mop", "mru", "mur", "mvr", "mwk", "mxn", "myr", "mzn", "nad",
        "ngn", "nio", "nok", "npr", "nzd", "omr", "pab", "pen", "pgk", "php", "pkr", "pln",
        "pyg", "qar", "ron", "rsd", "rub", "rwf", "sar", "sbd", "scr", "sdg", "sek", "sgd",
        "shp", "sle", "sll", "sos", "srd", "ssp", "stn", "svc", "syp", "szl", "thb", "tjs",
        "tmt", "tnd", "top", "try", "ttd", "twd", "tzs", "uah", "ugx", "usd", "uyu", "uzs",
        "ved", "ves", "vnd", "vuv", "wst", "xaf", "xcd", "xcg", "xof", "xpf", "yer", "zar",
        "zmw", "zwg", "zwl",
    }
)  # fmt: skip
#: Currencies whose minor unit is the major unit (Stripe's list).
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }
)  # fmt: skip
#: Currencies with three decimal places.
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def round_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half away from zero, in integers (the rule)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    if numerator < 0:
        return -round_half_up(-numerator, denominator)
    return (2 * numerator + denominator) // (2 * denominator)


def split_by_running_total(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` shared in proportion to ``weights`` (non-negative, not all zero).

    Part *i* is the rounded running total up to *i* less the rounded running total
    before it, so the parts sum to ``total`` exactly and each differs from its exact
    share ``total * w / sum(weights)`` by at most one minor unit.
    """
    whole = sum(weights)
    if whole <= 0 or any(weight < 0 for weight in weights):
        raise ValueError("weights must be non-negative and not all zero")
    parts: list[int] = []
    running = 0
    before = 0
    for weight in weights:
        running += weight
        upto = round_half_up(total * running, whole)
        parts.append(upto - before)
        before = upto
    return parts


def currency_exponent(currency: str) -> int:
    """How many decimal places the currency's minor unit has."""
    code = normalize_currency(currency)
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def normalize_currency(currency: str) -> str:
    """The lowercase code of ``currency`` (``"USD"`` -> ``"usd"``); ValueError unless it
    is one of :data:`ISO_4217_CURRENCIES` (``"zzz"``, ``"$$$"`` and ``"dollars"`` are not)."""
    code = currency.strip().lower() if isinstance(currency, str) else ""
    if code not in ISO_4217_CURRENCIES:
        raise ValueError(f"not an ISO 4217 currency code: {str(currency)[:20]!r}")
    return code


def _currency_field(value: object) -> str:
    # A TollwayError passes through pydantic untouched: the answer is 422 with the
    # documented code ``invalid_currency``, not a generic ``validation_error``.
    try:
        if not isinstance(value, str):
            raise ValueError
        return normalize_currency(value)
    except ValueError:
        raise Unprocessable(
            f"{str(value)[:20]!r} is not an ISO 4217 currency code (usd, eur, jpy ...)",
            code="invalid_currency",
        ) from None


#: The currency field of every request schema: an ISO 4217 code in any case, stored
#: lowercase; anything else is 422 ``invalid_currency``.
Currency = Annotated[
    str,
    BeforeValidator(_currency_field),
    Field(description="ISO 4217 currency code, any case (stored lowercase)", examples=["usd"]),
]


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: ``Money(2900, "usd")`` is $29.00."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        # bool is an int subclass; True dollars is a bug, not money.
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise TypeError(f"amount_minor must be int, got {type(self.amount_minor).__name__}")
        object.__setattr__(self, "currency", normalize_currency(self.currency))

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(0, currency)

    @classmethod
    def from_decimal(
        cls, amount: Decimal | str | int, currency: str, *, rounding: str = ROUND_HALF_UP
    ) -> Money:
        """Major units (``Decimal("29.99")``) to minor units, rounded once with ``rounding``."""
        if isinstance(amount, float):
            raise TypeError("floats are never money; pass a Decimal or a string")
        exponent = currency_exponent(currency)
        minor = (Decimal(amount) * (Decimal(10) ** exponent)).quantize(
            Decimal(1), rounding=rounding
        )
        return cls(int(minor), currency)

    def to_decimal(self) -> Decimal:
        return Decimal(self.amount_minor).scaleb(-currency_exponent(self.currency))

    def _check(self, other: Any) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot combine Money with {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"currency mismatch: {self.currency} and {other.currency}")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.amount_minor + self._check(other).amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.amount_minor - self._check(other).amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        return self.amount_minor < self._check(other).amount_minor

    def __le__(self, other: Money) -> bool:
        return self.amount_minor <= self._check(other).amount_minor

    def multiply(self, factor: int | Decimal, *, rounding: str = ROUND_HALF_UP) -> Money:
        """Scale by an integer (exact) or a Decimal (rounded once)."""
        if isinstance(factor, float):
            raise TypeError("floats are never money; pass a Decimal")
        if isinstance(factor, int):
            return Money(self.amount_minor * factor, self.currency)
        scaled = (Decimal(self.amount_minor) * factor).quantize(Decimal(1), rounding=rounding)
        return Money(int(scaled), self.currency)

    def allocate(self, ratios: list[int]) -> list[Money]:
        """Split without losing a minor unit: remainders go to the first parts."""
        if not ratios or any(r < 0 for r in ratios) or sum(ratios) == 0:
            raise ValueError("ratios must be non-negative with a positive sum")
        total = sum(ratios)
        parts = [self.amount_minor * r // total for r in ratios]
        for index in range(self.amount_minor - sum(parts)):
            parts[index % len(parts)] += 1
        return [Money(part, self.currency) for part in parts]

    def format(self) -> str:
        """Human text such as ``29.00 USD`` (for invoices and logs, never for parsing)."""
        exponent = currency_exponent(self.currency)
        return f"{self.to_decimal():.{exponent}f} {self.currency.upper()}"

    def as_dict(self) -> dict[str, Any]:
        return {"amount": self.amount_minor, "currency": self.currency}
