"""What marketplace operations need besides the session."""

from __future__ import annotations

from dataclasses import dataclass

from tollway.config import Settings
from tollway.kit.clock import Clock
from tollway.kit.signing import KeyRing
from tollway.marketplace.storage import ArtifactStorage
from tollway.payments.env import PaymentEnv


@dataclass(frozen=True, slots=True)
class MarketEnv:
    """The settings, the business clock, the signing keys and the artifact storage."""

    settings: Settings
    clock: Clock
    keys: KeyRing
    storage: ArtifactStorage

    @property
    def payments(self) -> PaymentEnv:
        return PaymentEnv.of(self)
