"""Password hashing (argon2id through pwdlib) and the password policy.

Hashing costs tens to hundreds of milliseconds of CPU by design, so the request path
uses the ``*_in_thread`` variants, which leave the event loop free for other requests.

Imported users may arrive with bcrypt hashes: they verify, and are rehashed with
argon2id at their next successful login. Unknown emails still cost one hash, so a
login's timing does not tell whether an account exists.
"""

from __future__ import annotations

import asyncio
from functools import cache
from importlib import resources

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

from tollway.errors import Unprocessable

MIN_LENGTH = 10
MAX_LENGTH = 1024

_hasher = PasswordHash((Argon2Hasher(), BcryptHasher()))
# Verified against when the email is unknown, so both paths do the same work.
_DUMMY_HASH = _hasher.hash("tollway-timing-equaliser-not-a-password")


class WeakPassword(Unprocessable):
    code = "weak_password"
    title = "Password too weak"


@cache
def _common_passwords() -> frozenset[str]:
    text = (resources.files("tollway.accounts") / "common_passwords.txt").read_text("utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line and not line.startswith("#")
    )


def check_policy(password: str, *, email: str) -> None:
    """At least 10 characters, not the email (or its name part), not a common password."""
    if len(password) < MIN_LENGTH:
        raise WeakPassword(f"use at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise WeakPassword(f"use at most {MAX_LENGTH} characters")
    lowered = password.strip().lower()
    local_part = email.split("@", 1)[0].lower()
    if lowered in {email.lower(), local_part}:
        raise WeakPassword("the password must not be your email address")
    if lowered in _common_passwords():
        raise WeakPassword("this password is on the list of commonly used passwords")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(valid, new hash if the stored one should be upgraded). Constant work when no hash."""
    if password_hash is None:
        _hasher.verify(password, _DUMMY_HASH)
        return False, None
    valid, updated = _hasher.verify_and_update(password, password_hash)
    return valid, updated


async def hash_password_in_thread(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_in_thread(
    password: str, password_hash: str | None
) -> tuple[bool, str | None]:
    return await asyncio.to_thread(verify_password, password, password_hash)
