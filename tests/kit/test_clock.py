from datetime import UTC, datetime, timedelta

import pytest

from tollway.kit.clock import ManualClock, SystemClock


class TestClocks:
    def test_manual_clock_moves_only_when_told(self) -> None:
        clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
        assert clock.now() == clock.now()
        clock.advance(days=30)
        assert clock.now() == datetime(2026, 1, 31, tzinfo=UTC)

    def test_naive_times_are_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone"):
            ManualClock(datetime(2026, 1, 1))  # noqa: DTZ001 - the point of the test

    def test_system_clock_offset_shifts_now(self) -> None:
        clock = SystemClock()
        before = clock.now()
        clock.advance(3600)
        assert clock.now() - before >= timedelta(hours=1)
        assert clock.now().tzinfo is UTC
