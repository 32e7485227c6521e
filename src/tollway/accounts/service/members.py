"""Memberships: who belongs to an organization with which role, and the invitations
that add them."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts import repository
from tollway.accounts.errors import InvitationNotFound, LastOwner
from tollway.accounts.models import Invitation, Membership
from tollway.accounts.service.organizations import organization_service
from tollway.accounts.service.records import (
    INVITATION_ACCEPT_PAGE,
    INVITATION_TOKEN_PREFIX,
    INVITATION_TTL,
    MANAGER_ROLES,
    AcceptedInvitation,
    AddedMember,
    IssuedInvitation,
    Member,
    MembershipView,
    hash_invitation_token,
    normalize_email,
)
from tollway.accounts.service.users import user_service
from tollway.audit.service import audit_service
from tollway.auth.scopes import ROLES
from tollway.config import page_link
from tollway.errors import Conflict, Forbidden, NotFound, Unprocessable
from tollway.kit.cache import TTLCache
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox


class MembershipService:
    def __init__(self) -> None:
        self._memberships: TTLCache[tuple[str, str], MembershipView] = TTLCache()

    def cached_membership(
        self, *, user_id: str, organization_id: str, now: datetime
    ) -> MembershipView | None:
        """The membership view if this process read it within the last second, else None
        (then :meth:`membership_view` reads it)."""
        hit, view = self._memberships.get((user_id, organization_id), now=now)
        return view if hit else None

    async def membership_view(
        self, session: AsyncSession, *, user_id: str, organization_id: str, now: datetime
    ) -> MembershipView:
        """The user's current role in the organization, read at most once a second per
        process; a membership added, changed or removed in this process is seen at once
        (every flushed change drops it), in another within the second."""

        async def load() -> MembershipView:
            membership = await self.get_membership(
                session, user_id=user_id, organization_id=organization_id
            )
            return MembershipView(role=membership.role if membership is not None else None)

        return await self._memberships.get_or_load((user_id, organization_id), now=now, load=load)

    def forget_membership(self, *, user_id: str, organization_id: str) -> None:
        self._memberships.discard((user_id, organization_id))

    async def get_membership(
        self, session: AsyncSession, *, user_id: str, organization_id: str
    ) -> Membership | None:
        return await repository.memberships(session).get_by_user_and_organization(
            user_id=user_id, organization_id=organization_id
        )

    async def default_membership(self, session: AsyncSession, user_id: str) -> Membership:
        """The organization a login lands in: the personal one, else the oldest membership."""
        memberships = await repository.memberships(session).list_for_user(user_id)
        if not memberships:
            raise NotFound("this user belongs to no organization")
        for membership in memberships:
            organization = await repository.organizations(session).get_by_id(
                membership.organization_id
            )
            if organization is not None and organization.personal_for_user_id == user_id:
                return membership
        return memberships[0]

    async def list_members(
        self, session: AsyncSession, *, organization_id: str
    ) -> tuple[list[Member], list[Invitation]]:
        rows = await repository.memberships(session).list_members(organization_id)
        invitations = await repository.invitations(session).list_for_organization(organization_id)
        return [Member(membership=m, user=u) for m, u in rows], invitations

    async def _manager_role(
        self, session: AsyncSession, *, organization_id: str, actor_user_id: str | None
    ) -> str:
        """The acting user's current role, checked against the database, not the token."""
        membership = (
            await self.get_membership(
                session, user_id=actor_user_id, organization_id=organization_id
            )
            if actor_user_id is not None
            else None
        )
        if membership is None or membership.role not in MANAGER_ROLES:
            raise Forbidden("only owners and admins manage members", code="insufficient_role")
        return membership.role

    async def add_member(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        actor_user_id: str | None,
        email: str,
        role: str,
        pages_url: str,
        now: datetime,
    ) -> AddedMember:
        """Add the account with ``email`` at once when its email is verified (an OAuth
        provider vouched for the mailbox); otherwise invite the email with an accept token
        (link starting with ``pages_url``), whether or not an account has it.

        A password registration proves no mailbox: anyone may register a colleague's
        address before it is added. Such an account joins only by accepting the token,
        which goes to the mailbox. 409 ``already_member``, ``already_invited``.
        """
        self.check_role(role)
        actor_role = await self._manager_role(
            session, organization_id=organization_id, actor_user_id=actor_user_id
        )
        if role == "owner" and actor_role != "owner":
            raise Forbidden("only owners make owners", code="insufficient_role")
        email = normalize_email(email)
        user = await repository.users(session).get_by_email(email)
        memberships = repository.memberships(session)
        if user is not None and await memberships.get_by_user_and_organization(
            user_id=user.id, organization_id=organization_id
        ):
            raise Conflict("this user is already a member", code="already_member")
        if user is None or not user.email_verified:
            return AddedMember(
                member=None,
                invitation=await self._invite(
                    session,
                    organization_id=organization_id,
                    actor_user_id=actor_user_id,
                    email=email,
                    role=role,
                    pages_url=pages_url,
                    now=now,
                ),
            )
        membership = Membership(
            id=new_id("mem"),
            organization_id=organization_id,
            user_id=user.id,
            role=role,
            created_at=now,
        )
        await memberships.add(membership)
        details: dict[str, object] = {"role": role, "via": "verified_email"}
        # An invitation sent before the account verified its email gives way: the
        # membership is what the manager asked for now, and a spent token joins nothing.
        invitations = repository.invitations(session)
        superseded = await invitations.get_by_email(organization_id=organization_id, email=email)
        if superseded is not None:
            await invitations.delete(superseded)
            details["superseded_invitation_id"] = superseded.id
        audit_service.record(
            session,
            action="member.added",
            target=user.id,
            organization_id=organization_id,
            details=details,
            occurred_at=now,
        )
        await outbox.publish(
            session,
            "member.added",
            {"user_id": user.id, "role": role, "via": "direct"},
            organization_id=organization_id,
            occurred_at=now,
        )
        return AddedMember(member=Member(membership=membership, user=user), invitation=None)

    async def _invite(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        actor_user_id: str | None,
        email: str,
        role: str,
        pages_url: str,
        now: datetime,
    ) -> IssuedInvitation:
        invitations = repository.invitations(session)
        existing = await invitations.get_by_email(organization_id=organization_id, email=email)
        if existing is not None and existing.expires_at > now:
            raise Conflict("this email is already invited", code="already_invited")
        if existing is not None:
            await invitations.delete(existing)
        token = INVITATION_TOKEN_PREFIX + secrets.token_urlsafe(32)
        accept_url = page_link(pages_url, INVITATION_ACCEPT_PAGE, token=token)
        invitation = Invitation(
            id=new_id("invite"),
            organization_id=organization_id,
            email=email,
            role=role,
            invited_by_user_id=actor_user_id,
            token_hash=hash_invitation_token(token),
            created_at=now,
            expires_at=now + INVITATION_TTL,
        )
        await invitations.add(invitation)
        organization = await organization_service.get_organization(session, organization_id)
        audit_service.record(
            session,
            action="member.invited",
            target=invitation.id,
            organization_id=organization_id,
            actor=f"user:{actor_user_id}" if actor_user_id else None,
            details={"email": email, "role": role},
            occurred_at=now,
        )
        # The operator's mailer sends the link to the address; the token travels only
        # here and in the answer to the inviter.
        await outbox.publish(
            session,
            "member.invited",
            {
                "invitation_id": invitation.id,
                "email": email,
                "role": role,
                "organization_name": organization.name,
                "token": token,
                "accept_url": accept_url,
                "expires_at": invitation.expires_at.isoformat(),
            },
            organization_id=organization_id,
            occurred_at=now,
        )
        return IssuedInvitation(invitation=invitation, token=token, accept_url=accept_url)

    async def accept_invitation(
        self, session: AsyncSession, *, user_id: str, token: str, now: datetime
    ) -> AcceptedInvitation:
        """Make the logged-in user a member through an invitation's token.

        The token was sent to the invited address, so holding it proves control of that
        mailbox; the accepting account may have registered with another email. 404
        ``invitation_not_found`` for a token unknown, spent, withdrawn or expired; 409
        ``already_member`` (the invitation stays) when the user is in the organization.
        """
        invitations = repository.invitations(session)
        invitation = await invitations.get_by_token_hash(hash_invitation_token(token))
        if invitation is None or invitation.expires_at <= now:
            raise InvitationNotFound(
                "this invitation does not exist, was withdrawn, used or has expired; "
                "ask for a new one"
            )
        user = await user_service.get_user(session, user_id)
        memberships = repository.memberships(session)
        if await memberships.get_by_user_and_organization(
            user_id=user.id, organization_id=invitation.organization_id
        ):
            raise Conflict("you are already a member of this organization", code="already_member")
        membership = await user_service.join_by_invitation(
            session,
            user=user,
            invitation=invitation,
            via="token",
            now=now,
            invited_email=invitation.email,
        )
        organization = await organization_service.get_organization(
            session, invitation.organization_id
        )
        return AcceptedInvitation(membership=membership, organization=organization)

    async def change_role(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        actor_user_id: str | None,
        user_id: str,
        role: str,
        now: datetime,
    ) -> Member:
        self.check_role(role)
        memberships = await repository.memberships(session).lock_organization(organization_id)
        actor_role = await self._manager_role(
            session, organization_id=organization_id, actor_user_id=actor_user_id
        )
        target = next((m for m in memberships if m.user_id == user_id), None)
        if target is None:
            raise NotFound("no such member")
        if "owner" in (role, target.role) and actor_role != "owner":
            raise Forbidden("only owners make or unmake owners", code="insufficient_role")
        owners = sum(1 for m in memberships if m.role == "owner")
        if target.role == "owner" and role != "owner" and owners <= 1:
            raise LastOwner("the organization needs an owner; make another member owner first")
        previous, target.role = target.role, role
        await session.flush()
        if previous != role:
            audit_service.record(
                session,
                action="member.role_changed",
                target=user_id,
                organization_id=organization_id,
                details={"from": previous, "to": role},
                occurred_at=now,
            )
            await outbox.publish(
                session,
                "member.role_changed",
                {"user_id": user_id, "from": previous, "to": role},
                organization_id=organization_id,
                occurred_at=now,
            )
        return Member(membership=target, user=await user_service.get_user(session, user_id))

    async def remove_member(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        actor_user_id: str | None,
        member_id: str,
        now: datetime,
    ) -> None:
        """Remove a member (by user id) or withdraw an invitation (by invitation id)."""
        memberships = await repository.memberships(session).lock_organization(organization_id)
        actor_role = await self._manager_role(
            session, organization_id=organization_id, actor_user_id=actor_user_id
        )
        invitations = repository.invitations(session)
        invitation = await invitations.get_for_organization(member_id, organization_id)
        if invitation is not None:
            await invitations.delete(invitation)
            audit_service.record(
                session,
                action="member.invitation_withdrawn",
                target=invitation.id,
                organization_id=organization_id,
                details={"email": invitation.email},
                occurred_at=now,
            )
            return
        target = next((m for m in memberships if m.user_id == member_id), None)
        if target is None:
            raise NotFound("no such member")
        if target.role == "owner":
            if actor_role != "owner":
                raise Forbidden("only owners remove owners", code="insufficient_role")
            if sum(1 for m in memberships if m.role == "owner") <= 1:
                raise LastOwner("the organization needs an owner; make another member owner first")
        await repository.memberships(session).delete(target)
        audit_service.record(
            session,
            action="member.removed",
            target=member_id,
            organization_id=organization_id,
            details={"role": target.role},
            occurred_at=now,
        )
        await outbox.publish(
            session,
            "member.removed",
            {"user_id": member_id, "role": target.role},
            organization_id=organization_id,
            occurred_at=now,
        )

    async def purge_expired_invitations(self, session: AsyncSession, *, now: datetime) -> int:
        return await repository.invitations(session).purge_expired(now=now)

    def check_role(self, role: str) -> str:
        if role not in ROLES:
            raise Unprocessable(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        return role


membership_service = MembershipService()


@event.listens_for(Membership, "after_insert")
@event.listens_for(Membership, "after_update")
@event.listens_for(Membership, "after_delete")
def _forget_changed_membership(
    _mapper: object, _connection: object, membership: Membership
) -> None:
    membership_service.forget_membership(
        user_id=membership.user_id, organization_id=membership.organization_id
    )
