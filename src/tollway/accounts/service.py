"""Users, organizations and memberships: the tenancy every other domain hangs on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts import repository
from tollway.accounts.models import Membership, Organization, User
from tollway.accounts.passwords import check_policy, hash_password
from tollway.audit.service import audit_service
from tollway.auth.scopes import ROLES
from tollway.errors import Conflict, NotFound, Unprocessable
from tollway.kit.cache import TTLCache
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox


class EmailTaken(Conflict):
    code = "email_taken"
    title = "Email already registered"


@dataclass(frozen=True, slots=True)
class Tenancy:
    user: User
    organization: Organization
    membership: Membership


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True, slots=True)
class OrganizationView:
    """What callers show of an organization; cheap to cache."""

    id: str
    name: str
    billing_country: str | None
    billing_email: str | None
    created_at: datetime


class AccountService:
    def __init__(self) -> None:
        self._organizations: TTLCache[str, OrganizationView] = TTLCache()

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

        ``password`` None makes an account that signs in only through OAuth.
        """
        email = normalize_email(email)
        if password is not None:
            check_policy(password, email=email)
        users = repository.users(session)
        if await users.get_by_email(email) is not None:
            raise EmailTaken("an account with this email exists; log in instead")
        user = User(
            id=new_id("usr"),
            email=email,
            name=name,
            password_hash=hash_password(password) if password is not None else None,
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
        audit_service.record(
            session,
            action="user.registered",
            target=user.id,
            organization_id=organization.id,
            actor=f"user:{user.id}",
            occurred_at=now,
        )
        await outbox.publish(
            session,
            "user.registered",
            {"user_id": user.id, "organization_id": organization.id, "email": email},
            organization_id=organization.id,
            occurred_at=now,
        )
        return Tenancy(user=user, organization=organization, membership=membership)

    async def get_user(self, session: AsyncSession, user_id: str) -> User:
        user = await repository.users(session).get_by_id(user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    async def get_user_by_email(self, session: AsyncSession, email: str) -> User | None:
        return await repository.users(session).get_by_email(normalize_email(email))

    async def get_organization(self, session: AsyncSession, organization_id: str) -> Organization:
        organization = await repository.organizations(session).get_by_id(organization_id)
        if organization is None:
            raise NotFound("no such organization")
        return organization

    async def organization_view(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> OrganizationView:
        """The organization as callers see it, read at most once a second per process."""
        hit, view = self._organizations.get(organization_id, now=now)
        if hit and view is not None:
            return view
        organization = await self.get_organization(session, organization_id)
        view = OrganizationView(
            id=organization.id,
            name=organization.name,
            billing_country=organization.billing_country,
            billing_email=organization.billing_email,
            created_at=organization.created_at,
        )
        self._organizations.put(organization_id, view, now=now)
        return view

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
        audit_service.record(
            session,
            action="user.platform_admin_changed",
            target=user.id,
            details={"is_platform_admin": is_admin},
            occurred_at=now,
        )
        await session.flush()
        return user

    def check_role(self, role: str) -> str:
        if role not in ROLES:
            raise Unprocessable(f"role must be one of {', '.join(ROLES)}", code="invalid_role")
        return role


account_service = AccountService()
