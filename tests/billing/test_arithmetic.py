from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from tollway.billing.arithmetic import (
    add_months,
    period_bounds,
    prorate,
    round_half_up,
    tax_exclusive,
    tax_inclusive,
)


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


class TestPeriods:
    def test_a_month_from_the_31st_clamps_to_the_month_end_and_comes_back(self) -> None:
        anchor = datetime(2026, 1, 31, 9, 0, tzinfo=UTC)
        assert add_months(anchor, 1) == datetime(2026, 2, 28, 9, 0, tzinfo=UTC)
        assert add_months(anchor, 2) == datetime(2026, 3, 31, 9, 0, tzinfo=UTC)
        assert period_bounds(anchor, 1, "month") == (
            datetime(2026, 2, 28, 9, 0, tzinfo=UTC),
            datetime(2026, 3, 31, 9, 0, tzinfo=UTC),
        )

    def test_a_yearly_period_spans_twelve_months(self) -> None:
        anchor = datetime(2024, 2, 29, tzinfo=UTC)
        assert period_bounds(anchor, 1, "year") == (
            datetime(2025, 2, 28, tzinfo=UTC),
            datetime(2026, 2, 28, tzinfo=UTC),
        )


class TestProrationAndTax:
    def test_proration_is_the_exact_share_rounded_once(self) -> None:
        day = 86_400
        assert prorate(2900, remaining_seconds=19 * day, period_seconds=29 * day) == 1900
        assert prorate(9900, remaining_seconds=19 * day, period_seconds=29 * day) == 6486
        assert prorate(1000, remaining_seconds=-5, period_seconds=day) == 0
        assert prorate(1000, remaining_seconds=2 * day, period_seconds=day) == 1000

    def test_exclusive_tax_is_added_and_inclusive_tax_is_contained(self) -> None:
        assert tax_exclusive(4586, 1900) == 871
        # 12.00 including 20 %: net 10.00, tax 2.00
        assert tax_inclusive(1200, 2000) == 200
        assert tax_inclusive(1000, 2000) == 167
