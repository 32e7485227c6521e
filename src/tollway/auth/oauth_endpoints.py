"""Login with an OAuth provider: the redirect out and the callback."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import Query
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollway.auth.edge import session_answer, set_session_cookies
from tollway.auth.oauth import OAUTH_COOKIE_PATH, OAUTH_STATE_COOKIE, STATE_TTL, oauth_service
from tollway.auth.schemas import SessionOut
from tollway.auth.service import PendingSecondFactor, auth_service
from tollway.auth.sessions import CHALLENGE_COOKIE, TWO_FACTOR_PAGE, OpenedSession
from tollway.auth.two_factor import TotpRequired
from tollway.config import Settings
from tollway.kit.routing import DatabaseDep, SettingsDep, WallClockDep, api_router

router = api_router(prefix="/api/v1/auth", tags=["auth"])


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


@router.get("/oauth/{provider}/callback", response_model=SessionOut)
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
        set_session_cookies(response, result, settings)
    else:
        response = Response(
            content=session_answer(result).model_dump_json(),
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
