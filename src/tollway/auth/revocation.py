"""Ending logins: a refresh-token family with the access tokens it issued, or every
login and dashboard session of one user.

Revoked access tokens are reloaded by every process within a second, dashboard
sessions are re-read within a second (see ``authenticator``), so what is revoked here
stops working everywhere about a second after the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.auth import repository
from tollway.auth.tokens import ACCESS_TOKEN_TTL


@dataclass(frozen=True, slots=True)
class RevokedLogins:
    #: Refresh-token families (logins through ``/auth/login`` or OAuth token mode).
    families: int
    #: Dashboard cookie sessions.
    sessions: int


async def revoke_family(session: AsyncSession, family_id: str, *, now: datetime) -> None:
    """Revoke a login: every refresh token of the family and every access token they issued."""
    tokens = repository.refresh_tokens(session)
    revoked = repository.revoked_tokens(session)
    for member in await tokens.list_family(family_id):
        if member.access_token_id is not None:
            await revoked.revoke(
                member.access_token_id, at=now, expires_at=member.created_at + ACCESS_TOKEN_TTL
            )
    await tokens.revoke_family(family_id, at=now)


async def revoke_every_login(
    session: AsyncSession,
    *,
    user_id: str,
    now: datetime,
    keep_family: str | None = None,
    keep_session: str | None = None,
) -> RevokedLogins:
    """Revoke every token login and close every dashboard session of the user, except
    the login ``keep_family`` and the session ``keep_session`` (the caller's own, when
    a person changes their password and stays logged in)."""
    families = [
        family_id
        for family_id in await repository.refresh_tokens(session).list_live_families(user_id)
        if family_id != keep_family
    ]
    for family_id in families:
        await revoke_family(session, family_id, now=now)
    sessions = await repository.dashboard_sessions(session).revoke_for_user(
        user_id, at=now, keep_id=keep_session
    )
    await session.flush()
    return RevokedLogins(families=len(families), sessions=sessions)
