"""What a payment operation needs besides the session: settings and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tollway.config import Settings
from tollway.kit.clock import Clock


class _HasSettingsAndClock(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def clock(self) -> Clock: ...


@dataclass(frozen=True, slots=True)
class PaymentEnv:
    """Settings and business clock; endpoints take it as ``PaymentEnvDep``
    (:mod:`tollway.payments.dependencies`), sweeps and commands build it with
    :meth:`of`."""

    settings: Settings
    clock: Clock

    @classmethod
    def of(cls, source: _HasSettingsAndClock) -> PaymentEnv:
        """The env of a sweep's context, a command's or another domain's env."""
        return cls(settings=source.settings, clock=source.clock)
