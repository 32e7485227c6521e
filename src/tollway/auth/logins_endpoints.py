"""The logins of a person: listed, one ended, all the others ended."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import Response

from tollway.auth import revocation
from tollway.auth.authenticator import TollwayAuthenticator
from tollway.auth.dependencies import UserPrincipal
from tollway.auth.schemas import LoginListOut, LoginOut, LoginsEndedOut
from tollway.kit.routing import SessionDep, WallClockDep, api_router

router = api_router(prefix="/api/v1/auth", tags=["auth"])


@router.get("/logins", response_model=LoginListOut)
async def list_logins(
    principal: UserPrincipal, session: SessionDep, clock: WallClockDep
) -> LoginListOut:
    """Where the logged-in person is logged in: token logins (from `/auth/login` or OAuth,
    with their latest refresh) and dashboard sessions, in every organization; `current`
    marks the one making this request. API keys get 403 `user_required`."""
    logins = await revocation.list_logins(session, principal=principal, now=clock.now())
    return LoginListOut(items=[LoginOut(**asdict(login)) for login in logins])


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


@router.post("/logins/end-others", response_model=LoginsEndedOut)
async def end_other_logins(
    principal: UserPrincipal, session: SessionDep, clock: WallClockDep
) -> LoginsEndedOut:
    """Log out everywhere else: every other token login and dashboard session of the
    person ends (refused everywhere within a second); this one stays."""
    ended = await revocation.end_other_logins(session, principal=principal, now=clock.now())
    return LoginsEndedOut(logins=ended.families, sessions=ended.sessions)
