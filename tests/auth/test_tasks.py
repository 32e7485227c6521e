"""The identity housekeeping sweep."""

from datetime import timedelta

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.fixtures.identity import register
from tollway.auth.models import DashboardSession, LoginThrottle, OAuthState, TwoFactorChallenge
from tollway.auth.tasks import purge_expired
from tollway.db import Database
from tollway.kit.clock import ManualClock
from tollway.kit.sweeps import SweepContext


async def count(database: Database, model: type) -> int:
    async with database.transaction(write=False) as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


class TestPurgeExpired:
    async def test_expired_rows_and_quiet_throttles_go_and_a_rerun_changes_nothing(
        self, app: FastAPI, client: httpx.AsyncClient, database: Database, clock: ManualClock
    ) -> None:
        account = await register(client)
        body = {"email": account.email, "password": account.password}
        assert (await client.post("/api/v1/auth/session", json=body)).status_code == 200
        wrong = {**body, "password": "wrong password!"}
        assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401
        async with database.transaction() as session:
            session.add(
                OAuthState(
                    state_hash="0" * 64,
                    provider="github",
                    code_verifier="v" * 64,
                    mode="cookie",
                    redirect_to="/dashboard",
                    created_at=clock.now(),
                    expires_at=clock.now() + timedelta(minutes=10),
                )
            )
            session.add(
                TwoFactorChallenge(
                    challenge_hash="1" * 64,
                    user_id=account.user_id,
                    via="oauth:github",
                    mode="token",
                    redirect_to="/dashboard",
                    created_at=clock.now(),
                    expires_at=clock.now() + timedelta(minutes=5),
                )
            )
        context = SweepContext(database=database, clock=clock, settings=app.state.settings)
        assert await purge_expired(context) == 0

        clock.advance(days=7, seconds=1)
        # state, 2FA challenge, session, account and address throttles
        assert await purge_expired(context) == 5
        assert await count(database, OAuthState) == 0
        assert await count(database, TwoFactorChallenge) == 0
        assert await count(database, DashboardSession) == 0
        assert await count(database, LoginThrottle) == 0
        assert await purge_expired(context) == 0
