from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from tollway.errors import TollwayError
from tollway.kit.money import (
    Currency,
    Money,
    currency_exponent,
    round_half_up,
    split_by_running_total,
)


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


class TestRounding:
    def test_halves_round_away_from_zero(self) -> None:
        assert round_half_up(5, 10) == 1
        assert round_half_up(4, 10) == 0
        assert round_half_up(-5, 10) == -1
        assert round_half_up(15, 10) == 2

    @given(st.integers(-(10**12), 10**12), st.integers(1, 10**6))
    def test_the_result_is_within_half_a_unit_of_the_exact_value(
        self, numerator: int, denominator: int
    ) -> None:
        result = round_half_up(numerator, denominator)
        assert abs(result * denominator - numerator) * 2 <= denominator

    def test_money_from_a_decimal_rounds_half_up_too(self) -> None:
        assert Money.from_decimal(Decimal("0.125"), "usd") == Money(13, "usd")
        assert Money.from_decimal(Decimal("-0.125"), "usd") == Money(-13, "usd")
        assert Money(5, "usd").multiply(Decimal("0.5")) == Money(3, "usd")


class TestSharing:
    def test_a_commission_and_the_authors_part_add_up_to_the_sale(self) -> None:
        assert split_by_running_total(999, [30, 70]) == [300, 699]
        assert sum(split_by_running_total(1, [1, 1, 1])) == 1

    def test_weights_must_be_non_negative_and_not_all_zero(self) -> None:
        with pytest.raises(ValueError, match="weights"):
            split_by_running_total(100, [0, 0])
        with pytest.raises(ValueError, match="weights"):
            split_by_running_total(100, [5, -1])

    @given(
        st.integers(-(10**12), 10**12),
        st.lists(st.integers(0, 10**6), min_size=1, max_size=20).filter(lambda w: sum(w) > 0),
    )
    def test_shares_always_sum_to_the_total_and_stay_within_one_unit(
        self, total: int, weights: list[int]
    ) -> None:
        parts = split_by_running_total(total, weights)
        assert sum(parts) == total
        whole = sum(weights)
        for part, weight in zip(parts, weights, strict=True):
            # |part - total * weight / whole| <= 1, in integers
            assert abs(part * whole - total * weight) <= whole


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
