"""The login steps as a service: a verdict reached before the transaction is re-judged
when the account changed in between."""

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from tests.fixtures.identity import PASSWORD, register
from tollway.accounts.models import User
from tollway.accounts.passwords import hash_password
from tollway.auth.service import InvalidCredentials, LoginAttempt, auth_service
from tollway.db import Database
from tollway.kit.clock import ManualClock


class TestLoginSteps:
    async def test_a_password_changed_after_the_check_is_judged_again(
        self, app: FastAPI, client: httpx.AsyncClient, database: Database, clock: ManualClock
    ) -> None:
        account = await register(client)
        attempt = LoginAttempt(email=account.email, password=PASSWORD)
        async with database.transaction() as session:
            user_id, password_hash = await auth_service.look_up_login(
                session, attempt=attempt, settings=app.state.settings, now=clock.now()
            )
        check = await auth_service.check_password(
            user_id=user_id, password_hash=password_hash, password=PASSWORD
        )
        assert check.valid is True
        async with database.transaction() as session:
            await session.execute(
                update(User)
                .where(User.id == account.user_id)
                .values(password_hash=hash_password("a brand new password 99"))
            )
        with pytest.raises(InvalidCredentials):
            async with database.transaction() as session:
                await auth_service.verify_login(
                    session,
                    settings=app.state.settings,
                    attempt=attempt,
                    check=check,
                    now=clock.now(),
                )
