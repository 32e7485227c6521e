"""The request's :class:`~tollway.payments.env.PaymentEnv`, for endpoints."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from tollway.kit.routing import ClockDep, SettingsDep
from tollway.payments.env import PaymentEnv


async def get_payment_env(settings: SettingsDep, clock: ClockDep) -> PaymentEnv:
    return PaymentEnv(settings=settings, clock=clock)


PaymentEnvDep = Annotated[PaymentEnv, Depends(get_payment_env)]
