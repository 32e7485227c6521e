"""Logins: listing them, and ending one (a refresh-token family with the access tokens
it issued, or a dashboard session), every other, or every login of one user.

Revoked access tokens are reloaded by every process within a second, dashboard
sessions are re-read within a second (see ``authenticator``), so what is revoked here
stops working everywhere about a second after the transaction commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.auth import repository
from tollway.auth.principal import Principal
from tollway.auth.tokens import ACCESS_TOKEN_TTL
from tollway.errors import NotFound


@dataclass(frozen=True, slots=True)
class RevokedLogins:
    #: Refresh-token families (logins through ``/auth/login`` or OAuth token mode).
    families: int
    #: Dashboard cookie sessions.
    sessions: int


class LoginNotFound(NotFound):
    code = "login_not_found"
    title = "No such login"


@dataclass(frozen=True, slots=True)
class Login:
    """One way a person is logged in: a token login (``fam_``: what ``/auth/login``
    and OAuth token mode hand out, refreshed over time) or a dashboard session (``ses_``)."""

    id: str
    kind: str
    organization_id: str
    started_at: datetime
    #: The latest refresh of a token login; a dashboard session's start.
    last_active_at: datetime
    expires_at: datetime
    #: The login making this request.
    current: bool


async def revoke_family(session: AsyncSession, family_id: str, *, now: datetime) -> list[str]:
    """Revoke a login: every refresh token of the family and every access token they
    issued. Answers the ids of those access tokens."""
    tokens = repository.refresh_tokens(session)
    revoked = repository.revoked_tokens(session)
    access_tokens: list[str] = []
    for member in await tokens.list_family(family_id):
        if member.access_token_id is not None:
            await revoked.revoke(
                member.access_token_id, at=now, expires_at=member.created_at + ACCESS_TOKEN_TTL
            )
            access_tokens.append(member.access_token_id)
    await tokens.revoke_family(family_id, at=now)
    return access_tokens


async def current_login(
    session: AsyncSession, principal: Principal
) -> tuple[str | None, str | None]:
    """The caller's own login: (its refresh-token family, its dashboard session)."""
    family = (
        await repository.refresh_tokens(session).get_by_access_token(principal.token_id)
        if principal.token_id is not None
        else None
    )
    return family, principal.extra.get("session_id")


async def list_logins(session: AsyncSession, *, principal: Principal, now: datetime) -> list[Login]:
    """The person's live logins and dashboard sessions, in every organization."""
    assert principal.user_id is not None
    family, session_id = await current_login(session, principal)
    rows = await repository.refresh_tokens(session).list_live_logins(principal.user_id, now=now)
    logins = [
        Login(
            id=row.family_id,
            kind="token",
            organization_id=row.organization_id,
            started_at=row.started_at,
            last_active_at=row.last_active_at,
            expires_at=row.expires_at,
            current=row.family_id == family,
        )
        for row in rows
    ]
    for opened in await repository.dashboard_sessions(session).list_open(
        principal.user_id, now=now
    ):
        logins.append(
            Login(
                id=opened.id,
                kind="dashboard",
                organization_id=opened.organization_id,
                started_at=opened.created_at,
                last_active_at=opened.created_at,
                expires_at=opened.expires_at,
                current=opened.id == session_id,
            )
        )
    return logins


@dataclass(frozen=True, slots=True)
class EndedLogin:
    login: Login
    #: The access tokens it had issued (a token login), now revoked.
    access_tokens: list[str]


async def end_login(
    session: AsyncSession, *, principal: Principal, login_id: str, now: datetime
) -> EndedLogin:
    """End one of the person's logins (404 ``login_not_found`` for anything else, also
    one already ended)."""
    for login in await list_logins(session, principal=principal, now=now):
        if login.id != login_id:
            continue
        access_tokens: list[str] = []
        if login.kind == "token":
            access_tokens = await revoke_family(session, login.id, now=now)
        else:
            opened = await repository.dashboard_sessions(session).get_by_id(login.id)
            assert opened is not None
            opened.revoked_at = now
        await session.flush()
        return EndedLogin(login=login, access_tokens=access_tokens)
    raise LoginNotFound("no such login of yours, or it has ended")


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


async def end_other_logins(
    session: AsyncSession, *, principal: Principal, now: datetime
) -> RevokedLogins:
    """End every login and dashboard session of the person but the one making this call."""
    assert principal.user_id is not None
    keep_family, keep_session = await current_login(session, principal)
    return await revoke_every_login(
        session,
        user_id=principal.user_id,
        now=now,
        keep_family=keep_family,
        keep_session=keep_session,
    )
