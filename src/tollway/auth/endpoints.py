from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tollway.accounts.schemas import OrganizationOut, RegistrationIn, UserOut
from tollway.accounts.service import account_service
from tollway.auth.authenticator import TollwayAuthenticator
from tollway.auth.dependencies import CurrentPrincipal
from tollway.auth.schemas import LoginIn, Me, RefreshIn, Session, ValidateIn, Validation
from tollway.auth.service import IssuedSession, auth_service, tier_of
from tollway.errors import Unauthorized
from tollway.kit.routing import ClockDep, SessionDep, api_router

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


@router.post("/register", status_code=201, response_model=Session)
async def register(
    body: RegistrationIn, request: Request, session: SessionDep, clock: ClockDep
) -> Session:
    """Create a user and their personal organization (the user is its `owner`), and log in.

    Passwords need at least 10 characters, must not be the email and must not be a
    commonly used password (422 `weak_password`). A registered email is 409 `email_taken`.
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
async def login(body: LoginIn, request: Request, session: SessionDep, clock: ClockDep) -> Session:
    """Exchange email and password for an access token (15 minutes) and a refresh token.

    A wrong email or password is 401 `invalid_credentials`, in the same time either way.
    """
    issued = await auth_service.login(
        session,
        keys=request.app.state.signing_keys,
        email=str(body.email),
        password=body.password,
        organization_id=body.organization_id,
        now=clock.now(),
    )
    return _session(issued)


@router.post("/refresh", response_model=Session)
async def refresh(
    body: RefreshIn, request: Request, session: SessionDep, clock: ClockDep
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
    principal: CurrentPrincipal, request: Request, session: SessionDep, clock: ClockDep
) -> Response:
    """Revoke the access token used for this call and every refresh token of its login."""
    await auth_service.logout(session, principal=principal, now=clock.now())
    if principal.token_id is not None:
        request.app.state.authenticator.note_revoked_token(principal.token_id)
    return Response(status_code=204)


@router.post("/validate", response_model=Validation)
async def validate(body: ValidateIn, request: Request, session: SessionDep) -> Validation:
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
        tier=await tier_of(session, principal.organization_id),
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
        await account_service.get_user(session, principal.user_id)
        if principal.kind == "user" and principal.user_id is not None
        else None
    )
    return Me(
        user=UserOut.model_validate(user) if user is not None else None,
        organization=OrganizationOut.model_validate(organization),
        role=principal.role,
        tier=await tier_of(session, principal.organization_id),
        scopes=sorted(principal.scopes),
        api_key_id=principal.api_key_id,
    )
