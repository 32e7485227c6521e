"""What the auth routes share: the session answer and cookies, the caller's address, and the
short write transaction a login takes before its password is hashed."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response

from tollway.accounts.schemas import OrganizationOut, UserOut
from tollway.auth.schemas import DashboardSessionOut, SessionOut
from tollway.auth.service import IssuedSession
from tollway.auth.sessions import CSRF_COOKIE, SESSION_COOKIE, OpenedSession
from tollway.config import Settings
from tollway.db import Database, Transaction


def session_answer(issued: IssuedSession) -> SessionOut:
    return SessionOut(
        user=UserOut.model_validate(issued.user),
        organization=OrganizationOut.model_validate(issued.organization),
        role=issued.role,
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


def client_address_of(request: Request) -> str | None:
    """The caller's address; behind a proxy, run uvicorn with --proxy-headers so that
    this is the client's and not the proxy's."""
    return request.client.host if request.client is not None else None


@contextlib.asynccontextmanager
async def before_hashing(request: Request, database: Database) -> AsyncIterator[AsyncSession]:
    """A short write transaction of its own, committed before a password is hashed (the
    attempt it reserves must be seen by concurrent attempts); or the request's, when an
    ``Idempotency-Key`` claim opened it already (a second write transaction in the task
    would wait for the first forever on SQLite): its locks then hold through the hashing."""
    transaction: Transaction = request.state.transaction
    if transaction.started:
        yield await transaction.begin()
        return
    async with database.transaction() as session:
        yield session


def set_session_cookies(response: Response, opened: OpenedSession, settings: Settings) -> None:
    max_age = settings.session_ttl_seconds
    secure = settings.secure_cookies
    response.set_cookie(
        SESSION_COOKIE,
        opened.token,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=secure,
    )
    # Readable by the dashboard's scripts, which echo it in X-CSRF-Token.
    response.set_cookie(
        CSRF_COOKIE,
        opened.record.csrf_token,
        max_age=max_age,
        path="/",
        httponly=False,
        samesite="lax",
        secure=secure,
    )


def dashboard_session(opened: OpenedSession) -> DashboardSessionOut:
    return DashboardSessionOut(
        user=UserOut.model_validate(opened.user),
        organization=OrganizationOut.model_validate(opened.organization),
        role=opened.role,
        csrf_token=opened.record.csrf_token,
        expires_at=opened.record.expires_at,
    )
