from __future__ import annotations

from datetime import UTC, datetime

from tollway.billing.arithmetic import (
    add_months,
    period_bounds,
    prorate,
    tax_exclusive,
    tax_inclusive,
)


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
