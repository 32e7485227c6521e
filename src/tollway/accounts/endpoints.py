"""Organizations, their members and invitations.

An organization is addressed by its id, and only from inside it: a token or key of
another organization gets 404, exactly as for an organization that does not exist.
Invitations are accepted by token, by any logged-in user (``/api/v1/invitations``).
"""

from __future__ import annotations

from starlette.responses import Response

from tollway.accounts.auth import AnyMember, MemberManager
from tollway.accounts.schemas import (
    InvitationAcceptedOut,
    InvitationAcceptIn,
    InvitationIssuedOut,
    InvitationOut,
    MemberAddedOut,
    MemberAddIn,
    MemberListOut,
    MemberOut,
    MemberUpdateIn,
    OrganizationOut,
)
from tollway.accounts.service.members import membership_service
from tollway.accounts.service.organizations import organization_service
from tollway.accounts.service.records import Member
from tollway.auth.dependencies import CurrentPrincipal, UserPrincipal
from tollway.auth.principal import Principal
from tollway.errors import NotFound
from tollway.kit.routing import SessionDep, SettingsDep, WallClockDep, api_router

router = api_router(prefix="/api/v1", tags=["organizations"])


def _own(principal: Principal, organization_id: str) -> str:
    if principal.organization_id != organization_id:
        raise NotFound("no such organization")
    return organization_id


def _member(member: Member) -> MemberOut:
    return MemberOut(
        user_id=member.user.id,
        email=member.user.email,
        name=member.user.name,
        role=member.membership.role,
        joined_at=member.membership.created_at,
    )


@router.get("/organizations/{organization_id}", response_model=OrganizationOut)
async def get_organization(
    organization_id: str, principal: CurrentPrincipal, session: SessionDep
) -> OrganizationOut:
    """The caller's organization (any credential of it); others' are 404."""
    organization = await organization_service.get_organization(
        session, _own(principal, organization_id)
    )
    return OrganizationOut.model_validate(organization)


@router.get("/organizations/{organization_id}/members", response_model=MemberListOut)
async def list_members(
    organization_id: str, principal: AnyMember, session: SessionDep
) -> MemberListOut:
    """Members with their roles, and the invitations not yet accepted."""
    members, invitations = await membership_service.list_members(
        session, organization_id=_own(principal, organization_id)
    )
    return MemberListOut(
        items=[_member(member) for member in members],
        invitations=[InvitationOut.model_validate(invitation) for invitation in invitations],
    )


@router.post(
    "/organizations/{organization_id}/members", status_code=201, response_model=MemberAddedOut
)
async def add_member(
    organization_id: str,
    body: MemberAddIn,
    principal: MemberManager,
    session: SessionDep,
    settings: SettingsDep,
    clock: WallClockDep,
) -> MemberAddedOut:
    """Invite an email with a role (`owner`, `admin`, `billing`, `member`; default
    `member`). The answer is an invitation (`status: "invited"`) valid 14 days, with its
    accept `token` and `accept_url`, shown only in this answer and in the
    `member.invited` event (for the mailer): whoever holds the token accepts at
    `POST /api/v1/invitations/accept`. This holds also when an account with the email
    exists but registered with a password, since that proves no mailbox (anyone can
    register a colleague's address first). Only an account whose email an OAuth provider
    verified is added at once (`status: "added"`, `member`; an open invitation to it is
    withdrawn). Registering the email with a password later joins nothing; an OAuth
    registration with that verified email accepts the invitation.
    Owners and admins only; only owners make owners. 409 `already_member`, `already_invited`.
    """
    added = await membership_service.add_member(
        session,
        organization_id=_own(principal, organization_id),
        actor_user_id=principal.user_id,
        email=str(body.email),
        role=body.role,
        pages_url=settings.pages_base_url,
        now=clock.now(),
    )
    if added.member is not None:
        return MemberAddedOut(status="added", member=_member(added.member))
    assert added.invitation is not None
    return MemberAddedOut(
        status="invited",
        invitation=InvitationIssuedOut(
            **InvitationOut.model_validate(added.invitation.invitation).model_dump(),
            token=added.invitation.token,
            accept_url=added.invitation.accept_url,
        ),
    )


@router.patch("/organizations/{organization_id}/members/{user_id}", response_model=MemberOut)
async def change_role(
    organization_id: str,
    user_id: str,
    body: MemberUpdateIn,
    principal: MemberManager,
    session: SessionDep,
    clock: WallClockDep,
) -> MemberOut:
    """Change a member's role. Owners and admins only; only owners make or unmake
    owners; the last owner cannot be demoted (409 `last_owner`)."""
    member = await membership_service.change_role(
        session,
        organization_id=_own(principal, organization_id),
        actor_user_id=principal.user_id,
        user_id=user_id,
        role=body.role,
        now=clock.now(),
    )
    return _member(member)


@router.delete("/organizations/{organization_id}/members/{member_id}", status_code=204)
async def remove_member(
    organization_id: str,
    member_id: str,
    principal: MemberManager,
    session: SessionDep,
    clock: WallClockDep,
) -> Response:
    """Remove a member (by user id) or withdraw an invitation (by its id). Owners and
    admins only; only owners remove owners; the last owner stays (409 `last_owner`)."""
    await membership_service.remove_member(
        session,
        organization_id=_own(principal, organization_id),
        actor_user_id=principal.user_id,
        member_id=member_id,
        now=clock.now(),
    )
    return Response(status_code=204)


@router.post("/invitations/accept", response_model=InvitationAcceptedOut)
async def accept_invitation(
    body: InvitationAcceptIn, principal: UserPrincipal, session: SessionDep, clock: WallClockDep
) -> InvitationAcceptedOut:
    """Join the organization of an invitation with its `token` (from the invitation
    email's link), as the logged-in user (token or dashboard session, not an API key),
    with the invited role. The token proves control of the invited mailbox, so the
    account may have registered with another email. A token works once.

    The token travels in the body, not the path, to stay out of access logs. 404
    `invitation_not_found` (unknown, used, withdrawn or expired), 409 `already_member`.
    The user still logs in to their own organization by default; they reach this one
    with `organization_id` at login.
    """
    assert principal.user_id is not None
    accepted = await membership_service.accept_invitation(
        session, user_id=principal.user_id, token=body.token, now=clock.now()
    )
    return InvitationAcceptedOut(
        organization=OrganizationOut.model_validate(accepted.organization),
        user_id=accepted.membership.user_id,
        role=accepted.membership.role,
        joined_at=accepted.membership.created_at,
    )
