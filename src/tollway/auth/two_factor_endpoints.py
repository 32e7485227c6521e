"""Two-factor authentication: set up, enabled, disabled, and the login challenge answered."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tollway.auth.dependencies import UserPrincipal
from tollway.auth.edge import (
    client_address_of,
    dashboard_session,
    session_answer,
    set_session_cookies,
)
from tollway.auth.schemas import (
    ChallengeIn,
    ChallengeSessionOut,
    SessionOut,
    TotpCodeIn,
    TotpDisableIn,
    TotpEnabledOut,
    TotpSetupOut,
    TotpStatusOut,
)
from tollway.auth.service import auth_service
from tollway.auth.sessions import CHALLENGE_COOKIE, OpenedSession
from tollway.auth.two_factor import two_factor_service
from tollway.kit.routing import SessionDep, SettingsDep, WallClockDep, api_router

router = api_router(prefix="/api/v1/auth", tags=["auth"])


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


@router.post("/2fa/disable", response_model=TotpStatusOut)
async def disable_two_factor(
    body: TotpDisableIn,
    principal: UserPrincipal,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> TotpStatusOut:
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
    return TotpStatusOut(enabled=False)


@router.post("/2fa/challenge", response_model=SessionOut | ChallengeSessionOut)
async def complete_two_factor_challenge(
    body: ChallengeIn,
    request: Request,
    response: Response,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> SessionOut | ChallengeSessionOut:
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
        client_address=client_address_of(request),
        now=clock.now(),
    )
    if isinstance(completed.login, OpenedSession):
        set_session_cookies(response, completed.login, settings)
        response.delete_cookie(
            CHALLENGE_COOKIE,
            path="/",
            secure=settings.secure_cookies,
            httponly=True,
            samesite="lax",
        )
        return ChallengeSessionOut(
            **dashboard_session(completed.login).model_dump(),
            redirect_to=completed.redirect_to,
        )
    return session_answer(completed.login)
