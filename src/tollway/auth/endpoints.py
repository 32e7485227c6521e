from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Query
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollway.accounts.passwords import hash_password_in_thread
from tollway.accounts.schemas import OrganizationOut, RegistrationIn, UserOut
from tollway.accounts.service import account_service
from tollway.auth import revocation
from tollway.auth.authenticator import TollwayAuthenticator
from tollway.auth.credentials import credential_service
from tollway.auth.dependencies import CurrentPrincipal, UserPrincipal
from tollway.auth.oauth import OAUTH_COOKIE_PATH, OAUTH_STATE_COOKIE, STATE_TTL, oauth_service
from tollway.auth.schemas import (
    ChallengeIn,
    ChallengeSessionOut,
    DashboardSessionOut,
    EmailSent,
    EmailVerified,
    EmailVerifyIn,
    JoinedOrganization,
    LoginIn,
    LoginList,
    LoginOut,
    LoginsEnded,
    Me,
    PasswordChangeIn,
    PasswordResetConfirmIn,
    PasswordResetIn,
    RefreshIn,
    Session,
    TotpCodeIn,
    TotpDisableIn,
    TotpEnabledOut,
    TotpSetupOut,
    TotpStatus,
    ValidateIn,
    Validation,
)
from tollway.auth.service import (
    IssuedSession,
    LoginAttempt,
    PasswordCheck,
    PendingSecondFactor,
    auth_service,
    tier_of,
)
from tollway.auth.sessions import (
    CHALLENGE_COOKIE,
    CSRF_COOKIE,
    SESSION_COOKIE,
    TWO_FACTOR_PAGE,
    OpenedSession,
)
from tollway.auth.two_factor import TotpRequired, two_factor_service
from tollway.config import Settings
from tollway.db import Database, Transaction
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


def _session(issued: IssuedSession) -> Session:
    return Session(
        user=UserOut.model_validate(issued.user),
        organization=OrganizationOut.model_validate(issued.organization),
        role=issued.role,
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
    )


def _client_address(request: Request) -> str | None:
    """The caller's address; behind a proxy, run uvicorn with --proxy-headers so that
    this is the client's and not the proxy's."""
    return request.client.host if request.client is not None else None


def _attempt(body: LoginIn, request: Request) -> LoginAttempt:
    return LoginAttempt(
        email=str(body.email),
        password=body.password,
        totp_code=body.totp_code,
        client_address=_client_address(request),
        organization_id=body.organization_id,
    )


@contextlib.asynccontextmanager
async def _before_hashing(request: Request, database: Database) -> AsyncIterator[AsyncSession]:
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


async def _check_password(
    attempt: LoginAttempt, request: Request, database: Database, settings: Settings, clock: Clock
) -> PasswordCheck:
    """Steps one and two of a login, before the request's write transaction opens: a
    short write that reserves the attempt, then the password hash, verified while no
    database lock or connection is held (on SQLite every write of the process would
    otherwise wait for it)."""
    async with _before_hashing(request, database) as session:
        user_id, password_hash = await auth_service.look_up_login(
            session, attempt=attempt, settings=settings, now=clock.now()
        )
    return await auth_service.check_password(
        user_id=user_id, password_hash=password_hash, password=attempt.password
    )


def _set_session_cookies(response: Response, opened: OpenedSession, settings: Settings) -> None:
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


def _dashboard_session(opened: OpenedSession) -> DashboardSessionOut:
    return DashboardSessionOut(
        user=UserOut.model_validate(opened.user),
        organization=OrganizationOut.model_validate(opened.organization),
        role=opened.role,
        csrf_token=opened.record.csrf_token,
        expires_at=opened.record.expires_at,
    )


def _challenge_answer(pending: PendingSecondFactor, settings: Settings) -> Response:
    """A browser goes to the dashboard's 2FA page, the challenge in an HttpOnly cookie
    (not in the URL, where histories, logs and Referer headers would keep it); an API
    client gets 401 ``totp_required`` with the challenge in the problem document."""
    if pending.mode == "cookie":
        query = urlencode({"redirect_to": pending.redirect_to})
        response = RedirectResponse(f"{TWO_FACTOR_PAGE}?{query}", status_code=303)
        response.set_cookie(
            CHALLENGE_COOKIE,
            pending.challenge,
            max_age=pending.expires_in,
            path="/",
            httponly=True,
            samesite="lax",
            secure=settings.secure_cookies,
        )
        return response
    raise TotpRequired(
        "this account uses two-factor authentication; send the code with the challenge "
        "to POST /api/v1/auth/2fa/challenge",
        totp_required=True,
        challenge=pending.challenge,
        expires_in=pending.expires_in,
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
@router.post("/validate", response_model=Validation)
async def validate(
    body: ValidateIn, request: Request, session: SessionDep, clock: ClockDep
) -> Validation:
    """Check an access token or API key for another service: 200 with `valid` either way."""
    authenticator: TollwayAuthenticator = request.app.state.authenticator
    try:
        principal = await authenticator.principal_for(body.token)
    except Unauthorized as error:
        return Validation(valid=False, code=error.code)
    return Validation(
        valid=True,
        kind=principal.kind,
        user_id=principal.user_id,
        organization_id=principal.organization_id,
        tier=await tier_of(session, principal.organization_id, now=clock.now()),
        scopes=sorted(principal.scopes),
        expires_at=None,
    )


@router.get("/me", response_model=Me)
async def me(principal: CurrentPrincipal, session: SessionDep, clock: ClockDep) -> Me:
    """Who the credential belongs to: user (none for an API key), organization, role, tier."""
    organization = await account_service.organization_view(
        session, principal.organization_id, now=clock.now()
    )
    user = (
        await account_service.user_view(session, principal.user_id, now=clock.now())
        if principal.kind == "user" and principal.user_id is not None
        else None
    )
    return Me(
        user=UserOut.model_validate(user) if user is not None else None,
        organization=OrganizationOut.model_validate(organization),
        role=principal.role,
        tier=await tier_of(session, principal.organization_id, now=clock.now()),
        scopes=sorted(principal.scopes),
        api_key_id=principal.api_key_id,
    )


@router.post("/register", status_code=201, response_model=Session)
async def register(
    body: RegistrationIn, request: Request, session: SessionDep, clock: WallClockDep
) -> Session:
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
    return _session(issued)


@router.post("/login", response_model=Session)
async def login(
    body: LoginIn,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> Session:
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
    return _session(issued)


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
    _set_session_cookies(response, opened, settings)
    return _dashboard_session(opened)


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


@router.post("/refresh", response_model=Session)
async def refresh(
    body: RefreshIn, request: Request, session: SessionDep, clock: WallClockDep
) -> Session:
    """Rotate a refresh token: it is spent and a new pair comes back. Presenting a spent
    refresh token again is 401 `refresh_token_reused` and revokes that whole login."""
    issued = await auth_service.refresh(
        session,
        keys=request.app.state.signing_keys,
        refresh_token=body.refresh_token,
        now=clock.now(),
    )
    return _session(issued)


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


@router.get("/logins", response_model=LoginList)
async def list_logins(
    principal: UserPrincipal, session: SessionDep, clock: WallClockDep
) -> LoginList:
    """Where the logged-in person is logged in: token logins (from `/auth/login` or OAuth,
    with their latest refresh) and dashboard sessions, in every organization; `current`
    marks the one making this request. API keys get 403 `user_required`."""
    logins = await revocation.list_logins(session, principal=principal, now=clock.now())
    return LoginList(items=[LoginOut(**asdict(login)) for login in logins])


@router.delete("/logins/{login_id}", status_code=204)
async def end_login(
    login_id: str,
    principal: UserPrincipal,
    request: Request,
    session: SessionDep,
    clock: WallClockDep,
) -> Response:
    """End one login (a lost laptop, a leaked refresh token): its refresh and access tokens
    stop working, or the dashboard session closes; this process refuses them at once and
    every other within a second. 404 `login_not_found` for a login that is not the
    caller's or has ended. Ending the current one logs the caller out."""
    ended = await revocation.end_login(
        session, principal=principal, login_id=login_id, now=clock.now()
    )
    authenticator: TollwayAuthenticator = request.app.state.authenticator
    for token_id in ended.access_tokens:
        authenticator.note_revoked_token(token_id)
    if ended.login.kind == "dashboard":
        authenticator.forget_session(ended.login.id)
    return Response(status_code=204)


@router.post("/logins/end-others", response_model=LoginsEnded)
async def end_other_logins(
    principal: UserPrincipal, session: SessionDep, clock: WallClockDep
) -> LoginsEnded:
    """Log out everywhere else: every other token login and dashboard session of the
    person ends (refused everywhere within a second); this one stays."""
    ended = await revocation.end_other_logins(session, principal=principal, now=clock.now())
    return LoginsEnded(logins=ended.families, sessions=ended.sessions)


@router.post("/password", status_code=204)
async def change_password(
    body: PasswordChangeIn,
    principal: UserPrincipal,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> Response:
    """Change the password of the logged-in user (access token or dashboard session; API
    keys get 403 `user_required`), proven by `current_password`.

    A wrong current password is 401 `invalid_credentials` and counts as a failed login
    (429 `login_throttled` after too many, with `Retry-After`); `new_password` follows the
    registration policy (422 `weak_password`). On success (204) every other login
    (refresh-token family) and dashboard session of the user is revoked within a second;
    the one making this call stays logged in. API keys keep working. Audited as
    `user.password_changed` and published as the event `user.password_changed` (for the
    operator's mailer). An account without a password (signed up through OAuth) sets one
    through the password reset.
    """
    assert principal.user_id is not None
    client_address = _client_address(request)
    async with _before_hashing(request, database) as reserving:
        lookup = await credential_service.look_up_password_change(
            reserving,
            settings=settings,
            user_id=principal.user_id,
            new_password=body.new_password,
            client_address=client_address,
            now=clock.now(),
        )
    # Hashing outside any transaction, as at login; the new password only if it will do.
    check = await auth_service.check_password(
        user_id=lookup.user_id, password_hash=lookup.password_hash, password=body.current_password
    )
    new_hash = await hash_password_in_thread(body.new_password) if check.valid else None
    await credential_service.change_password(
        await get_session(request),
        settings=settings,
        principal=principal,
        current_password=body.current_password,
        check=check,
        new_password=body.new_password,
        new_password_hash=new_hash,
        client_address=client_address,
        now=clock.now(),
    )
    return Response(status_code=204)


@router.post("/password-reset", status_code=202, response_model=EmailSent)
async def request_password_reset(
    body: PasswordResetIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> EmailSent:
    """Forgot the password: if an account has this email, a reset token (valid one hour,
    once) goes to it in the event `user.password_reset_requested`, for the operator's
    mailer, with the link `{TOLLWAY_BASE_URL}/dashboard/password-reset?token=...`. A new
    request replaces the open token.

    The answer is 202 with the same body whether or not the account exists. Requests are
    limited per email and per client address: 429 `email_token_throttled` with
    `Retry-After` after too many.
    """
    await credential_service.request_password_reset(
        session,
        settings=settings,
        email=str(body.email),
        client_address=_client_address(request),
        now=clock.now(),
    )
    return EmailSent(
        detail="if an account has this email, a link to reset its password was sent to it"
    )


@router.post("/password-reset/confirm", status_code=204)
async def confirm_password_reset(
    body: PasswordResetConfirmIn, request: Request, database: DatabaseDep, clock: WallClockDep
) -> Response:
    """Set a new password with the `token` of a reset link (no login needed).

    400 `invalid_reset_token` when the token is unknown, used, expired or of another
    kind; 422 `weak_password` (the token stays usable). On success (204) the token is
    spent, every login and dashboard session of the user is revoked (refused within a
    second), failed logins of the account are forgotten, and two-factor authentication
    stays on. Audited as `user.password_reset`.
    """
    async with database.transaction(write=False) as reading:
        await credential_service.look_up_password_reset(
            reading, token=body.token, password=body.password, now=clock.now()
        )
    password_hash = await hash_password_in_thread(body.password)
    await credential_service.reset_password(
        await get_session(request), token=body.token, password_hash=password_hash, now=clock.now()
    )
    return Response(status_code=204)


@router.post("/email/verification", status_code=202, response_model=EmailSent)
async def request_email_verification(
    principal: UserPrincipal, session: SessionDep, settings: SettingsDep, clock: WallClockDep
) -> EmailSent:
    """Send a verification link to the logged-in user's email: a token (valid 24 hours,
    once) in the event `user.email_verification_requested`, for the operator's mailer,
    with the link `{TOLLWAY_BASE_URL}/dashboard/verify-email?token=...`. A new request
    replaces the open token. 409 `email_already_verified`; 429 `email_token_throttled`
    after too many requests.
    """
    assert principal.user_id is not None
    await credential_service.request_email_verification(
        session, settings=settings, user_id=principal.user_id, now=clock.now()
    )
    return EmailSent(detail="a verification link was sent to your email address")


@router.post("/email/verify", response_model=EmailVerified)
async def verify_email(
    body: EmailVerifyIn, principal: UserPrincipal, session: SessionDep, clock: WallClockDep
) -> EmailVerified:
    """Verify the logged-in user's email with the `token` of a verification link (the
    link's page asks the person to log in first). The token proves the mailbox, the login
    proves the account: a token sent for another account is refused, so a stranger who
    registered someone's address cannot get it verified by that person's click. Open
    invitations to the email become memberships at once (`joined`), as when an OAuth
    provider vouches for the address, and members added later join at once. 400
    `invalid_verification_token` when the token is unknown, used, expired, of another
    kind or of another account. Audited as `user.email_verified`.
    """
    assert principal.user_id is not None
    verified = await credential_service.verify_email(
        session, token=body.token, user_id=principal.user_id, now=clock.now()
    )
    return EmailVerified(
        user=UserOut.model_validate(verified.user),
        joined=[
            JoinedOrganization(organization_id=m.organization_id, role=m.role)
            for m in verified.joined
        ],
    )


@router.post("/2fa/setup", response_model=TotpSetupOut)
async def setup_two_factor(
    principal: UserPrincipal, session: SessionDep, settings: SettingsDep
) -> TotpSetupOut:
    """Start two-factor set-up: a new TOTP secret and its `otpauth://` URI for the
    authenticator app. Nothing changes at login until `/2fa/enable` confirms a code.
    409 `totp_already_enabled` while 2FA is on."""
    assert principal.user_id is not None
    setup = await two_factor_service.setup(
        session,
        user_id=principal.user_id,
        secret_key=settings.secret("secret_key"),
    )
    return TotpSetupOut(secret=setup.secret, otpauth_uri=setup.otpauth_uri)


@router.post("/2fa/enable", response_model=TotpEnabledOut)
async def enable_two_factor(
    body: TotpCodeIn,
    principal: UserPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> TotpEnabledOut:
    """Turn two-factor authentication on with a current code from the app (422
    `invalid_totp` when wrong). Answers ten one-time recovery codes, shown only here."""
    assert principal.user_id is not None
    codes = await two_factor_service.enable(
        session,
        user_id=principal.user_id,
        code=body.code,
        secret_key=settings.secret("secret_key"),
        now=clock.now(),
    )
    return TotpEnabledOut(recovery_codes=codes)


@router.post("/2fa/disable", response_model=TotpStatus)
async def disable_two_factor(
    body: TotpDisableIn,
    principal: UserPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> TotpStatus:
    """Turn two-factor authentication off, proven by a current code, an unused recovery
    code or the password (422 `invalid_totp` when none holds). Recovery codes are deleted."""
    assert principal.user_id is not None
    await two_factor_service.disable(
        session,
        user_id=principal.user_id,
        code=body.code,
        password=body.password,
        secret_key=settings.secret("secret_key"),
        now=clock.now(),
    )
    return TotpStatus(enabled=False)


@router.post("/2fa/challenge", response_model=Session | ChallengeSessionOut)
async def complete_two_factor_challenge(
    body: ChallengeIn,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> Session | ChallengeSessionOut:
    """Finish a login that waits for its second factor (an OAuth login of an account
    with 2FA on): `challenge` (or the `tollway_2fa_challenge` cookie) and a current
    `totp_code` or an unused `recovery_code`.

    Answers what the login would have: for an API (`mode=token`) login the JSON session
    of `/auth/login`; for a browser login the dashboard session cookies and the body of
    `/auth/session` with `redirect_to`. A challenge works once, for 5 minutes.
    401 `invalid_challenge` (unknown, used or expired: log in again), 401
    `totp_required` without a code, 401 `invalid_totp` for a wrong code (a failed
    login for throttling; the challenge stays usable), 429 `login_throttled`.
    """
    completed = await auth_service.complete_challenge(
        session,
        keys=request.app.state.signing_keys,
        settings=settings,
        challenge=body.challenge or request.cookies.get(CHALLENGE_COOKIE),
        code=body.totp_code or body.recovery_code,
        client_address=_client_address(request),
        now=clock.now(),
    )
    if isinstance(completed.login, OpenedSession):
        _set_session_cookies(response, completed.login, settings)
        response.delete_cookie(
            CHALLENGE_COOKIE,
            path="/",
            secure=settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return ChallengeSessionOut(
            **_dashboard_session(completed.login).model_dump(),
            redirect_to=completed.redirect_to,
        )
    return _session(completed.login)


@router.get("/oauth/{provider}/authorize", status_code=302)
async def oauth_authorize(
    provider: str,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: WallClockDep,
    mode: Annotated[Literal["cookie", "token"], Query()] = "cookie",
    redirect_to: Annotated[str | None, Query(max_length=500)] = None,
) -> Response:
    """Start an OAuth login with `github` or `google`: redirects to the provider with
    `state` and a PKCE challenge. `mode=cookie` (default) ends in a dashboard session and
    a redirect to `redirect_to` (a path here, default `/dashboard`); `mode=token` ends
    with the JSON session of `/auth/login`. Sets the HttpOnly cookie `tollway_oauth_state`
    (ten minutes), which the callback requires. 404 `oauth_provider_not_configured`."""
    # A GET that writes (the state row): its own write transaction, not the read one.
    async with database.transaction() as session:
        started = await oauth_service.begin(
            session,
            settings=settings,
            provider=provider,
            mode=mode,
            redirect_to=redirect_to,
            now=clock.now(),
        )
    response = RedirectResponse(started.url, status_code=302)
    # Binds the login to this browser: the callback is refused without it (login CSRF).
    response.set_cookie(
        OAUTH_STATE_COOKIE,
        started.state,
        max_age=int(STATE_TTL.total_seconds()),
        path=OAUTH_COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    return response


@router.get("/oauth/{provider}/callback", response_model=Session)
async def oauth_callback(
    provider: str,
    request: Request,
    database: DatabaseDep,
    settings: SettingsDep,
    clock: WallClockDep,
    state: Annotated[str | None, Query(max_length=200)] = None,
    code: Annotated[str | None, Query(max_length=2000)] = None,
    error: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Where the provider sends the browser back: completes the login, linking the
    provider identity to the account with the same *verified* email or creating one.

    Linking to an account registered with a password (its email never verified) hands
    it to the mailbox owner: its password is cleared, its 2FA turned off, its logins,
    dashboard sessions and the API keys its user created are revoked (audited as
    `user.unverified_credentials_cleared`).

    A verified account with two-factor authentication on is not logged in (nor linked) yet:
    with `mode=token` the answer is 401 `totp_required` with `challenge` and
    `expires_in` (300 s) members, to complete at `POST /auth/2fa/challenge`; with
    `mode=cookie` a 303 to `/dashboard/2fa?redirect_to=...` with the challenge in the
    HttpOnly cookie `tollway_2fa_challenge`.

    400 `invalid_oauth_state` for a state not issued here (or used, or expired),
    400 `oauth_state_mismatch` without the `tollway_oauth_state` cookie authorize set in
    the browser that started this login,
    400 `oauth_denied` when the user declined, 403 `oauth_email_unverified` when the
    provider has no verified email, 502 `oauth_provider_error` when the provider fails.
    """
    # Three steps, so that no transaction stays open while the provider answers: the
    # state is spent (kept spent even if the rest fails), the code is exchanged over
    # the network, then the account is found, linked or created.
    async with database.transaction() as session:
        pending = await oauth_service.take_state(
            session,
            provider=provider,
            state=state,
            browser_state=request.cookies.get(OAUTH_STATE_COOKIE),
            now=clock.now(),
        )
    identity = await oauth_service.identify(
        settings=settings, pending=pending, code=code, error=error
    )
    async with database.transaction() as session:
        result = await auth_service.oauth_login(
            session,
            keys=request.app.state.signing_keys,
            settings=settings,
            identity=identity,
            mode=pending.mode,
            redirect_to=pending.redirect_to,
            now=clock.now(),
        )
    if isinstance(result, PendingSecondFactor):
        response = _challenge_answer(result, settings)
    elif isinstance(result, OpenedSession):
        response = RedirectResponse(pending.redirect_to, status_code=303)
        _set_session_cookies(response, result, settings)
    else:
        response = Response(
            content=_session(result).model_dump_json(),
            media_type="application/json",
            status_code=200,
        )
    response.delete_cookie(
        OAUTH_STATE_COOKIE,
        path=OAUTH_COOKIE_PATH,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
    )
    return response
