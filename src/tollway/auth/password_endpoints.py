"""The password (changed, reset by email) and the email address's verification."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tollway.accounts.passwords import hash_password_in_thread
from tollway.accounts.schemas import UserOut
from tollway.auth.credentials import credential_service
from tollway.auth.dependencies import UserPrincipal
from tollway.auth.edge import before_hashing, client_address_of
from tollway.auth.schemas import (
    EmailSentOut,
    EmailVerifiedOut,
    EmailVerifyIn,
    JoinedOrganizationOut,
    PasswordChangeIn,
    PasswordResetConfirmIn,
    PasswordResetIn,
)
from tollway.auth.service import auth_service
from tollway.kit.routing import (
    DatabaseDep,
    SessionDep,
    SettingsDep,
    WallClockDep,
    api_router,
    get_session,
)

router = api_router(prefix="/api/v1/auth", tags=["auth"])


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
    client_address = client_address_of(request)
    async with before_hashing(request, database) as reserving:
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


@router.post("/password-reset", status_code=202, response_model=EmailSentOut)
async def request_password_reset(
    body: PasswordResetIn,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> EmailSentOut:
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
        client_address=client_address_of(request),
        now=clock.now(),
    )
    return EmailSentOut(
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


@router.post("/email/verification", status_code=202, response_model=EmailSentOut)
async def request_email_verification(
    principal: UserPrincipal, session: SessionDep, settings: SettingsDep, clock: WallClockDep
) -> EmailSentOut:
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
    return EmailSentOut(detail="a verification link was sent to your email address")


@router.post("/email/verify", response_model=EmailVerifiedOut)
async def verify_email(
    body: EmailVerifyIn, principal: UserPrincipal, session: SessionDep, clock: WallClockDep
) -> EmailVerifiedOut:
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
    return EmailVerifiedOut(
        user=UserOut.model_validate(verified.user),
        joined=[
            JoinedOrganizationOut(organization_id=m.organization_id, role=m.role)
            for m in verified.joined
        ],
    )
