"""Users, organizations and memberships: the tenancy every other domain hangs on."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts import repository
from tollway.accounts.models import Invitation, Membership, Organization, User
from tollway.accounts.passwords import check_policy, hash_password_in_thread
from tollway.audit.service import audit_service
from tollway.auth.scopes import ROLES
from tollway.config import page_link
from tollway.errors import Conflict, Forbidden, NotFound, Unprocessable
from tollway.kit.cache import TTLCache
from tollway.kit.countries import normalize_country
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox


class EmailTaken(Conflict):
    code = "email_taken"
    title = "Email already registered"


INVITATION_TTL = timedelta(days=14)
INVITATION_TOKEN_PREFIX = "twi_"  # noqa: S105 - a visible prefix, not a secret
#: The dashboard page an invitation link opens; it accepts through the API.
INVITATION_ACCEPT_PAGE = "invitations/accept"
#: Roles that manage members; only owners make, unmake or remove owners.
MANAGER_ROLES = frozenset({"owner", "admin"})


class InvitationNotFound(NotFound):
    code = "invitation_not_found"
    title = "No such invitation"


class LastOwner(Conflict):
    code = "last_owner"
    title = "The last owner cannot leave"


@dataclass(frozen=True, slots=True)
class Member:
    membership: Membership
    user: User


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    """A new invitation and its accept token, which exists only in this answer and in
    the ``member.invited`` event (the database keeps its SHA-256)."""

    invitation: Invitation
    token: str
    accept_url: str


@dataclass(frozen=True, slots=True)
class AddedMember:
    member: Member | None
    invitation: IssuedInvitation | None


@dataclass(frozen=True, slots=True)
class AcceptedInvitation:
    membership: Membership
    organization: Organization


@dataclass(frozen=True, slots=True)
class Tenancy:
    user: User
    organization: Organization
    membership: Membership


def normalize_email(email: str) -> str:
    return email.strip().lower()


class InvalidEmail(Unprocessable):
    code = "invalid_email"
    title = "Invalid email address"


def valid_email(email: str) -> str:
    """``email`` normalized, if it is an address the API's ``EmailStr`` fields accept
    (the same email-validator rules: an @, a dotted domain, no special-use names such as
    ``.test`` or ``localhost``); else 422 ``invalid_email``. Every way of creating an
    account checks with it, so none creates one its owner cannot log in with."""
    try:
        _, address = validate_email(email.strip())
    except PydanticCustomError as error:
        raise InvalidEmail(str(error)) from error
    return normalize_email(address)


def hash_invitation_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class OrganizationView:
    """What callers show of an organization; cheap to cache."""

    id: str
    name: str
    billing_country: str | None
    billing_email: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UserView:
    """What callers show of a user (``/auth/me``, each dashboard page); cheap to cache."""

    id: str
    email: str
    name: str | None
    email_verified: bool
    totp_enabled: bool
    is_platform_admin: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MembershipView:
    """A user's current role in an organization (``None``: not a member), what every
    authenticated request is authorized by; cheap to cache."""

    role: str | None


class InvalidCountry(Unprocessable):
    code = "invalid_country"
    title = "Unknown country"


@dataclass(frozen=True, slots=True)
class BillingProfile:
    """Who invoices are made out to; ``country`` selects the catalog's tax rate."""

    name: str | None
    country: str | None
    address_lines: list[str]
    tax_id: str | None


def _billing_profile(organization: Organization) -> BillingProfile:
    return BillingProfile(
        name=organization.billing_name,
        country=organization.billing_country,
        address_lines=list(organization.billing_address or []),
        tax_id=organization.billing_tax_id,
    )


class AccountService:
    def __init__(self) -> None:
        self._organizations: TTLCache[str, OrganizationView] = TTLCache()
        self._users: TTLCache[str, UserView] = TTLCache()
        self._memberships: TTLCache[tuple[str, str], MembershipView] = TTLCache()

    async def register(
        self,
        session: AsyncSession,
        *,
        email: str,
        password: str | None,
        now: datetime,
        name: str | None = None,
        organization_name: str | None = None,
        email_verified: bool = False,
        is_platform_admin: bool = False,
    ) -> Tenancy:
        """A new user with a personal organization of which they are the owner.

        ``password`` None makes an account that signs in only through OAuth. Open
        invitations to the email become memberships only when ``email_verified`` (an
        OAuth provider vouched for the mailbox): anyone can register any address with a
        password, so such a registration joins nothing; its owner accepts with the token.
        """
        email = valid_email(email)
        if password is not None:
            check_policy(password, email=email)
        users = repository.users(session)
        if await users.get_by_email(email) is not None:
            raise EmailTaken("an account with this email exists; log in instead")
        password_hash = await hash_password_in_thread(password) if password is not None else None
        user = User(
            id=new_id("usr"),
            email=email,
            name=name,
            password_hash=password_hash,
            email_verified=email_verified,
            is_platform_admin=is_platform_admin,
            created_at=now,
        )
        organization = Organization(
            id=new_id("org"),
            name=organization_name or f"{name or email.split('@', 1)[0]}'s organization",
            billing_email=email,
            personal_for_user_id=user.id,
            created_at=now,
        )
        membership = Membership(
            id=new_id("mem"),
            organization_id=organization.id,
            user_id=user.id,
            role="owner",
            created_at=now,
        )
        try:
            async with session.begin_nested():
                # Without relationship() the unit of work does not order inserts by
                # foreign key, so each parent is flushed before its children.
                for row in (user, organization, membership):
                    session.add(row)
                    await session.flush()
        except IntegrityError:
            # Two registrations of one email raced; the unique index decided.
            raise EmailTaken("an account with this email exists; log in instead") from None
        if email_verified:
            await self.accept_invitations_of_verified_email(session, user=user, now=now)
        audit_service.record(
            session,
            action="user.registered",
            target=user.id,
            organization_id=organization.id,
            actor=f"user:{user.id}",
            occurred_at=now,
        )
        if is_platform_admin:
            # A permission given at birth is audited as the grant it is, by whoever
            # created the account (the operator's console: actor cli).
            self._audit_platform_admin(session, user=user, now=now)
        await outbox.publish(
            session,
            "user.registered",
            {"user_id": user.id, "organization_id": organization.id, "email": email},
            organization_id=organization.id,
            occurred_at=now,
        )
        return Tenancy(user=user, organization=organization, membership=membership)

    async def get_user(
        self, session: AsyncSession, user_id: str, *, for_update: bool = False
    ) -> User:
        """The user (404 otherwise). ``for_update`` locks the row until the transaction
        ends and reads it afresh: what decides whether credentials are issued (the
        password hash, 2FA, verification) cannot change before they are."""
        users = repository.users(session)
        user = await users.lock(user_id) if for_update else await users.get_by_id(user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    async def user_view(self, session: AsyncSession, user_id: str, *, now: datetime) -> UserView:
        """The user as callers see it, read at most once a second per process (a change
        made in this process is seen at once: every flushed update of a user drops it)."""

        async def load() -> UserView:
            user = await self.get_user(session, user_id)
            return UserView(
                id=user.id,
                email=user.email,
                name=user.name,
                email_verified=user.email_verified,
                totp_enabled=user.totp_enabled,
                is_platform_admin=user.is_platform_admin,
                created_at=user.created_at,
            )

        return await self._users.get_or_load(user_id, now=now, load=load)

    def cached_user(self, user_id: str, *, now: datetime) -> UserView | None:
        """The user view if this process read it within the last second, else None."""
        hit, view = self._users.get(user_id, now=now)
        return view if hit else None

    def forget_user(self, user_id: str) -> None:
        self._users.discard(user_id)

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

    async def get_user_by_email(
        self, session: AsyncSession, email: str, *, for_update: bool = False
    ) -> User | None:
        return await repository.users(session).get_by_email(
            normalize_email(email), for_update=for_update
        )

    async def get_organization(self, session: AsyncSession, organization_id: str) -> Organization:
        organization = await repository.organizations(session).get_by_id(organization_id)
        if organization is None:
            raise NotFound("no such organization")
        return organization

    async def get_organizations(
        self, session: AsyncSession, organization_ids: list[str]
    ) -> dict[str, Organization]:
        """Many organizations in one query (a billing sweep's chunk), by ID."""
        found = await repository.organizations(session).list_by_ids(organization_ids)
        return {organization.id: organization for organization in found}

    async def organization_view(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> OrganizationView:
        """The organization as callers see it, read at most once a second per process."""

        async def load() -> OrganizationView:
            organization = await self.get_organization(session, organization_id)
            return OrganizationView(
                id=organization.id,
                name=organization.name,
                billing_country=organization.billing_country,
                billing_email=organization.billing_email,
                created_at=organization.created_at,
            )

        return await self._organizations.get_or_load(organization_id, now=now, load=load)

    async def billing_profile(self, session: AsyncSession, organization_id: str) -> BillingProfile:
        return _billing_profile(await self.get_organization(session, organization_id))

    async def set_billing_profile(
        self,
        session: AsyncSession,
        organization_id: str,
        *,
        name: str | None,
        country: str | None,
        address_lines: list[str],
        tax_id: str | None,
        actor: str | None = None,
    ) -> BillingProfile:
        """Replace the billing profile. ``country`` must be an ISO 3166-1 alpha-2 code
        (any case; 422 ``invalid_country`` otherwise, and nothing is written). Invoices
        issued from now on use it; issued ones keep the parties they were issued to."""
        code: str | None = None
        if country is not None:
            try:
                code = normalize_country(country)
            except ValueError as error:
                raise InvalidCountry(str(error), country=country) from None
        organization = await self.get_organization(session, organization_id)
        organization.billing_name = name
        organization.billing_country = code
        organization.billing_address = list(address_lines)
        organization.billing_tax_id = tax_id
        profile = _billing_profile(organization)
        audit_service.record(
            session,
            action="organization.billing_profile_changed",
            target=organization_id,
            organization_id=organization_id,
            actor=actor,
            details={"name": name, "country": code, "tax_id": tax_id},
        )
        await session.flush()
        self._organizations.discard(organization_id)
        return profile

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

    async def set_platform_admin(
        self, session: AsyncSession, *, user_id: str, is_admin: bool, now: datetime
    ) -> User:
        user = await self.get_user(session, user_id)
        user.is_platform_admin = is_admin
        self._audit_platform_admin(session, user=user, now=now)
        await session.flush()
        return user

    def _audit_platform_admin(self, session: AsyncSession, *, user: User, now: datetime) -> None:
        audit_service.record(
            session,
            action="user.platform_admin_changed",
            target=user.id,
            details={"is_platform_admin": user.is_platform_admin},
            occurred_at=now,
        )

    async def accept_invitations_of_verified_email(
        self, session: AsyncSession, *, user: User, now: datetime
    ) -> list[Membership]:
        """Open invitations to the user's email become memberships: called once the email
        is verified (an OAuth provider vouched for the mailbox, or the user presented an
        email verification token). An invitation to an organization the user is in
        already is spent without a second membership. Answers the new memberships."""
        if not user.email_verified:
            raise ValueError("only a verified email accepts invitations")
        invitations = repository.invitations(session)
        memberships = repository.memberships(session)
        joined: list[Membership] = []
        for invitation in await invitations.list_open_for_email(user.email, now=now):
            if await memberships.get_by_user_and_organization(
                user_id=user.id, organization_id=invitation.organization_id
            ):
                await invitations.delete(invitation)
                continue
            membership = Membership(
                id=new_id("mem"),
                organization_id=invitation.organization_id,
                user_id=user.id,
                role=invitation.role,
                created_at=now,
            )
            await memberships.add(membership)
            await invitations.delete(invitation)
            joined.append(membership)
            audit_service.record(
                session,
                action="member.joined",
                target=user.id,
                organization_id=invitation.organization_id,
                actor=f"user:{user.id}",
                details={
                    "role": invitation.role,
                    "invitation_id": invitation.id,
                    "via": "verified_email",
                },
                occurred_at=now,
            )
            await outbox.publish(
                session,
                "member.added",
                {"user_id": user.id, "role": invitation.role, "via": "invitation"},
                organization_id=invitation.organization_id,
                occurred_at=now,
            )
        return joined

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
        organization = await self.get_organization(session, organization_id)
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
        user = await self.get_user(session, user_id)
        memberships = repository.memberships(session)
        if await memberships.get_by_user_and_organization(
            user_id=user.id, organization_id=invitation.organization_id
        ):
            raise Conflict("you are already a member of this organization", code="already_member")
        membership = Membership(
            id=new_id("mem"),
            organization_id=invitation.organization_id,
            user_id=user.id,
            role=invitation.role,
            created_at=now,
        )
        await memberships.add(membership)
        await invitations.delete(invitation)
        audit_service.record(
            session,
            action="member.joined",
            target=user.id,
            organization_id=invitation.organization_id,
            actor=f"user:{user.id}",
            details={
                "role": invitation.role,
                "invitation_id": invitation.id,
                "invited_email": invitation.email,
                "via": "token",
            },
            occurred_at=now,
        )
        await outbox.publish(
            session,
            "member.added",
            {"user_id": user.id, "role": invitation.role, "via": "invitation"},
            organization_id=invitation.organization_id,
            occurred_at=now,
        )
        organization = await self.get_organization(session, invitation.organization_id)
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
        return Member(membership=target, user=await self.get_user(session, user_id))

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


account_service = AccountService()


@event.listens_for(User, "after_update")
@event.listens_for(User, "after_delete")
def _forget_changed_user(_mapper: object, _connection: object, user: User) -> None:
    account_service.forget_user(user.id)


@event.listens_for(Membership, "after_insert")
@event.listens_for(Membership, "after_update")
@event.listens_for(Membership, "after_delete")
def _forget_changed_membership(
    _mapper: object, _connection: object, membership: Membership
) -> None:
    account_service.forget_membership(
        user_id=membership.user_id, organization_id=membership.organization_id
    )
