from decimal import Decimal

import pytest
from pydantic import BaseModel

from tollway.errors import TollwayError
from tollway.kit.money import Currency, Money, currency_exponent


class TestMoney:
    def test_amounts_are_integers_of_minor_units(self) -> None:
        assert Money(2900, "USD") == Money(2900, "usd")
        assert Money(2900, "usd").format() == "29.00 USD"

    def test_floats_are_refused_everywhere(self) -> None:
        with pytest.raises(TypeError):
            Money(29.0, "usd")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Money.from_decimal(29.99, "usd")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            Money(100, "usd").multiply(1.5)  # type: ignore[arg-type]

    def test_booleans_are_not_amounts(self) -> None:
        with pytest.raises(TypeError):
            Money(True, "usd")

    def test_zero_decimal_and_three_decimal_currencies_keep_their_minor_units(self) -> None:
        assert currency_exponent("jpy") == 0
        assert currency_exponent("kwd") == 3
        assert Money.from_decimal("500", "jpy") == Money(500, "jpy")
        assert Money.from_decimal("1.234", "kwd") == Money(1234, "kwd")
        assert Money(500, "jpy").format() == "500 JPY"

    def test_decimal_prices_round_once_half_even(self) -> None:
        assert Money.from_decimal(Decimal("0.125"), "usd") == Money(12, "usd")
        assert Money.from_decimal(Decimal("0.135"), "usd") == Money(14, "usd")

    def test_mixing_currencies_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="currency mismatch"):
            _ = Money(100, "usd") + Money(100, "eur")

    def test_allocation_never_loses_a_cent(self) -> None:
        parts = Money(1000, "usd").allocate([1, 1, 1])
        assert [part.amount_minor for part in parts] == [334, 333, 333]
        assert sum(part.amount_minor for part in Money(-1000, "usd").allocate([1, 2])) == -1000

    def test_invalid_currency_codes_are_refused(self) -> None:
        with pytest.raises(ValueError, match="ISO 4217"):
            Money(1, "dollars")

    def test_three_letters_are_not_enough_to_be_a_currency(self) -> None:
        for code in ("zzz", "xts", "xxx", "xau"):
            with pytest.raises(ValueError, match="ISO 4217"):
                Money(1, code)
        assert Money(1, " GBP ").currency == "gbp"


class PriceIn(BaseModel):
    currency: Currency


class TestCurrencyField:
    def test_a_known_code_in_any_case_is_stored_lowercase(self) -> None:
        assert PriceIn(currency="EUR").currency == "eur"

    def test_an_unknown_code_answers_invalid_currency(self) -> None:
        for value in ("zzz", "$$$", "dollars", 840):
            with pytest.raises(TollwayError) as refused:
                PriceIn(currency=value)  # type: ignore[arg-type]
            assert (refused.value.status, refused.value.code) == (422, "invalid_currency")
