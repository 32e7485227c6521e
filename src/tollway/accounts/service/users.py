"""Users: registration, lookups, email verification's invitations and the platform-admin flag."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts import repository
from tollway.accounts.errors import EmailTaken
from tollway.accounts.models import Invitation, Membership, Organization, User
from tollway.accounts.passwords import check_policy, hash_password_in_thread
from tollway.accounts.service.records import Tenancy, UserView, normalize_email, valid_email
from tollway.audit.service import audit_service
from tollway.errors import NotFound
from tollway.kit.cache import TTLCache
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox


class UserService:
    def __init__(self) -> None:
        self._users: TTLCache[str, UserView] = TTLCache()

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

    async def get_user_by_email(
        self, session: AsyncSession, email: str, *, for_update: bool = False
    ) -> User | None:
        return await repository.users(session).get_by_email(
            normalize_email(email), for_update=for_update
        )

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
            joined.append(
                await self.join_by_invitation(
                    session, user=user, invitation=invitation, via="verified_email", now=now
                )
            )
        return joined

    async def join_by_invitation(
        self,
        session: AsyncSession,
        *,
        user: User,
        invitation: Invitation,
        via: str,
        now: datetime,
        **details: object,
    ) -> Membership:
        """The invitation becomes the user's membership and is spent; audited as
        ``member.joined`` (``via``: how the mailbox was proven) and published as
        ``member.added``. The caller has checked the user is not a member yet."""
        membership = Membership(
            id=new_id("mem"),
            organization_id=invitation.organization_id,
            user_id=user.id,
            role=invitation.role,
            created_at=now,
        )
        await repository.memberships(session).add(membership)
        await repository.invitations(session).delete(invitation)
        audit_service.record(
            session,
            action="member.joined",
            target=user.id,
            organization_id=invitation.organization_id,
            actor=f"user:{user.id}",
            details={
                "role": invitation.role,
                "invitation_id": invitation.id,
                **details,
                "via": via,
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
        return membership


user_service = UserService()


@event.listens_for(User, "after_update")
@event.listens_for(User, "after_delete")
def _forget_changed_user(_mapper: object, _connection: object, user: User) -> None:
    user_service.forget_user(user.id)
