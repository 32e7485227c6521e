"""Tokens and sessions: validate, me, register, login, the dashboard session, refresh
and logout."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tollway.accounts.schemas import OrganizationOut, RegistrationIn, UserOut
from tollway.accounts.service.organizations import organization_service
from tollway.accounts.service.users import user_service
from tollway.auth.authenticator import TollwayAuthenticator
from tollway.auth.dependencies import CurrentPrincipal, UserPrincipal
from tollway.auth.edge import (
    before_hashing,
    client_address_of,
    dashboard_session,
    session_answer,
    set_session_cookies,
)
from tollway.auth.schemas import (
    DashboardSessionOut,
    LoginIn,
    MeOut,
    RefreshIn,
    SessionOut,
    ValidateIn,
    ValidationOut,
)
from tollway.auth.service import LoginAttempt, PasswordCheck, auth_service, tier_of
from tollway.auth.sessions import CSRF_COOKIE, SESSION_COOKIE
from tollway.config import Settings
from tollway.db import Database
from tollway.errors import Unauthorized
from tollway.kit.clock import Clock
from tollway.kit.routing import (
    ClockDep,
    DatabaseDep,
    SessionDep,
    SettingsDep,
    WallClockDep,
    api_router,
    get_session,
)

router = api_router(prefix="/api/v1/auth", tags=["auth"])


def _attempt(body: LoginIn, request: Request) -> LoginAttempt:
    return LoginAttempt(
        email=str(body.email),
        password=body.password,
        totp_code=body.totp_code,
        client_address=client_address_of(request),
        organization_id=body.organization_id,
    )


async def _check_password(
    attempt: LoginAttempt, request: Request, database: Database, settings: Settings, clock: Clock
) -> PasswordCheck:
    """Steps one and two of a login, before the request's write transaction opens: a
    short write that reserves the attempt, then the password hash, verified while no
    database lock or connection is held (on SQLite every write of the process would
    otherwise wait for it)."""
    async with before_hashing(request, database) as session:
        user_id, password_hash = await auth_service.look_up_login(
            session, attempt=attempt, settings=settings, now=clock.now()
        )
    return await auth_service.check_password(
        user_id=user_id, password_hash=password_hash, password=attempt.password
    )


def _clear_session_cookies(response: Response, settings: Settings) -> None:
    for name in (SESSION_COOKIE, CSRF_COOKIE):
        response.delete_cookie(
            name,
            path="/",
            secure=settings.secure_cookies,
            httponly=name == SESSION_COOKIE,
            samesite="lax",
        )


# The hot paths first: routes are matched in order.
@router.post("/validate", response_model=ValidationOut)
async def validate(
    body: ValidateIn, request: Request, session: SessionDep, clock: ClockDep
) -> ValidationOut:
    """Check an access token or API key for another service: 200 with `valid` either way."""
    authenticator: TollwayAuthenticator = request.app.state.authenticator
    try:
        principal = await authenticator.principal_for(body.token)
    except Unauthorized as error:
        return ValidationOut(valid=False, code=error.code)
    return ValidationOut(
        valid=True,
        kind=principal.kind,
        user_id=principal.user_id,
        organization_id=principal.organization_id,
        tier=await tier_of(session, principal.organization_id, now=clock.now()),
        scopes=sorted(principal.scopes),
        expires_at=None,
    )


@router.get("/me", response_model=MeOut)
async def me(principal: CurrentPrincipal, session: SessionDep, clock: ClockDep) -> MeOut:
    """Who the credential belongs to: user (none for an API key), organization, role, tier."""
    organization = await organization_service.organization_view(
        session, principal.organization_id, now=clock.now()
    )
    user = (
        await user_service.user_view(session, principal.user_id, now=clock.now())
        if principal.kind == "user" and principal.user_id is not None
        else None
    )
    return MeOut(
        user=UserOut.model_validate(user) if user is not None else None,
        organization=OrganizationOut.model_validate(organization),
        role=principal.role,
        tier=await tier_of(session, principal.organization_id, now=clock.now()),
        scopes=sorted(principal.scopes),
        api_key_id=principal.api_key_id,
    )


@router.post("/register", status_code=201, response_model=SessionOut)
async def register(
    body: RegistrationIn, request: Request, session: SessionDep, clock: WallClockDep
) -> SessionOut:
    """Create a user and their personal organization (the user is its `owner`), and log in.

    Passwords need at least 10 characters, must not be the email and must not be a
    commonly used password (422 `weak_password`). A registered email is 409 `email_taken`.
    The email is not verified, so invitations to it are not accepted here: the invited
    user accepts with the invitation's token (`POST /api/v1/invitations/accept`).
    """
    issued = await auth_service.register(
        session,
        keys=request.app.state.signing_keys,
        email=str(body.email),
        password=body.password,
        name=body.name,
        organization_name=body.organization_name,
        now=clock.now(),
    )
    return session_answer(issued)


@router.post("/login", response_model=SessionOut)
async def login(
    body: LoginIn,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> SessionOut:
    """Exchange email and password for an access token (15 minutes) and a refresh token.

    A wrong email or password is 401 `invalid_credentials`, in the same time either way.
    With two-factor authentication on, `totp_code` (a current code or a recovery code) is
    needed: 401 `totp_required` without it, 401 `invalid_totp` when wrong. After 5
    failures for one account or from one address within 15 minutes, logins are refused
    with 429 `login_throttled` and `Retry-After`; repeated lock-outs last longer.
    """
    attempt = _attempt(body, request)
    check = await _check_password(attempt, request, database, settings, clock)
    issued = await auth_service.login(
        await get_session(request),
        keys=request.app.state.signing_keys,
        settings=settings,
        attempt=attempt,
        check=check,
        now=clock.now(),
    )
    return session_answer(issued)


@router.post("/session", response_model=DashboardSessionOut)
async def open_session(
    body: LoginIn,
    request: Request,
    response: Response,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> DashboardSessionOut:
    """Log into a dashboard cookie session (same checks and errors as `/auth/login`).

    Sets `tollway_session` (HttpOnly, SameSite=Lax, Secure behind https) and
    `tollway_csrf`. Requests authenticated by the cookie that change something
    (POST, PUT, PATCH, DELETE) must send the CSRF token in `X-CSRF-Token` (403 `csrf_failed`).
    """
    attempt = _attempt(body, request)
    check = await _check_password(attempt, request, database, settings, clock)
    opened = await auth_service.open_dashboard_session(
        await get_session(request),
        settings=settings,
        attempt=attempt,
        check=check,
        now=clock.now(),
    )
    set_session_cookies(response, opened, settings)
    return dashboard_session(opened)


@router.delete("/session", status_code=204)
async def close_session(
    principal: UserPrincipal,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> Response:
    """Log out of the dashboard: the session stops working everywhere within a second."""
    session_id = principal.extra.get("session_id")
    if session_id is None:
        raise Unauthorized("this call closes a dashboard session; send its cookie")
    await auth_service.logout(session, principal=principal, now=clock.now())
    authenticator: TollwayAuthenticator = request.app.state.authenticator
    authenticator.forget_session(session_id)
    response = Response(status_code=204)
    _clear_session_cookies(response, settings)
    return response


@router.post("/refresh", response_model=SessionOut)
async def refresh(
    body: RefreshIn, request: Request, session: SessionDep, clock: WallClockDep
) -> SessionOut:
    """Rotate a refresh token: it is spent and a new pair comes back. Presenting a spent
    refresh token again is 401 `refresh_token_reused` and revokes that whole login."""
    issued = await auth_service.refresh(
        session,
        keys=request.app.state.signing_keys,
        refresh_token=body.refresh_token,
        now=clock.now(),
    )
    return session_answer(issued)


@router.post("/logout", status_code=204)
async def logout(
    principal: CurrentPrincipal,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> Response:
    """Revoke the access token used for this call and every refresh token of its login
    (with a dashboard cookie: close that session)."""
    await auth_service.logout(session, principal=principal, now=clock.now())
    authenticator: TollwayAuthenticator = request.app.state.authenticator
    if principal.token_id is not None:
        authenticator.note_revoked_token(principal.token_id)
    response = Response(status_code=204)
    session_id = principal.extra.get("session_id")
    if session_id is not None:
        authenticator.forget_session(session_id)
        _clear_session_cookies(response, settings)
    return response
