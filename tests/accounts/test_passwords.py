"""Passwords: argon2id, imported bcrypt hashes upgraded at login, the policy."""

import httpx
import pytest
from pwdlib.hashers.bcrypt import BcryptHasher
from sqlalchemy import update

from tests.fixtures.identity import PASSWORD, register
from tollway.accounts.models import User
from tollway.accounts.passwords import WeakPassword, check_policy, hash_password, verify_password
from tollway.db import Database


async def stored_hash(database: Database, user_id: str) -> str | None:
    async with database.transaction(write=False) as session:
        user = await session.get(User, user_id)
    assert user is not None
    return user.password_hash


class TestHashing:
    def test_new_hashes_are_argon2id_and_verify(self) -> None:
        hashed = hash_password(PASSWORD)
        assert hashed.startswith("$argon2id$")
        assert verify_password(PASSWORD, hashed) == (True, None)
        assert verify_password("another password", hashed)[0] is False

    def test_a_bcrypt_hash_verifies_and_asks_for_an_upgrade(self) -> None:
        imported = BcryptHasher().hash(PASSWORD)
        valid, upgraded = verify_password(PASSWORD, imported)
        assert valid is True
        assert upgraded is not None
        assert upgraded.startswith("$argon2id$")
        assert verify_password("wrong password!", imported) == (False, None)

    def test_no_hash_still_does_the_work_and_fails(self) -> None:
        assert verify_password(PASSWORD, None) == (False, None)

    @pytest.mark.parametrize("password", ["short", "Password1234", "ada@example.com", "ADA"])
    def test_the_policy_refuses_weak_passwords(self, password: str) -> None:
        with pytest.raises(WeakPassword):
            check_policy(password, email="ada@example.com")


class TestImportedUsers:
    async def test_a_user_with_a_bcrypt_hash_logs_in_and_ends_up_with_argon2id(
        self, client: httpx.AsyncClient, database: Database
    ) -> None:
        account = await register(client)
        async with database.transaction() as session:
            await session.execute(
                update(User)
                .where(User.id == account.user_id)
                .values(password_hash=BcryptHasher().hash(PASSWORD))
            )
        assert (await stored_hash(database, account.user_id) or "").startswith("$2b$")

        wrong = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": "wrong password!"}
        )
        assert wrong.status_code == 401
        assert (await stored_hash(database, account.user_id) or "").startswith("$2b$")

        login = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert login.status_code == 200
        upgraded = await stored_hash(database, account.user_id)
        assert upgraded is not None
        assert upgraded.startswith("$argon2id$")
        again = await client.post(
            "/api/v1/auth/login", json={"email": account.email, "password": PASSWORD}
        )
        assert again.status_code == 200
        assert await stored_hash(database, account.user_id) == upgraded
