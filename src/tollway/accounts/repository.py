from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Invitation, Membership, Organization, User
from tollway.kit.repository import Repository


class UserRepository(Repository[User]):
    model = User

    async def get_by_email(self, email: str, *, for_update: bool = False) -> User | None:
        statement = select(User).where(func.lower(User.email) == email.lower())
        if for_update:
            statement = statement.with_for_update().execution_options(populate_existing=True)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def lock(self, user_id: str) -> User | None:
        """The user, row-locked for this transaction and read afresh."""
        statement = (
            select(User)
            .where(User.id == user_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()


class OrganizationRepository(Repository[Organization]):
    model = Organization

    async def list_by_ids(self, ids: list[str]) -> list[Organization]:
        statement = select(Organization).where(Organization.id.in_(ids))
        return list((await self.session.execute(statement)).scalars())


class MembershipRepository(Repository[Membership]):
    model = Membership

    async def get_by_user_and_organization(
        self, *, user_id: str, organization_id: str
    ) -> Membership | None:
        statement = select(Membership).where(
            Membership.user_id == user_id, Membership.organization_id == organization_id
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def list_for_user(self, user_id: str) -> list[Membership]:
        statement = select(Membership).where(Membership.user_id == user_id).order_by(Membership.id)
        return list((await self.session.execute(statement)).scalars())

    async def list_for_organization(self, organization_id: str) -> list[Membership]:
        statement = (
            select(Membership)
            .where(Membership.organization_id == organization_id)
            .order_by(Membership.id)
        )
        return list((await self.session.execute(statement)).scalars())

    async def lock_organization(self, organization_id: str) -> list[Membership]:
        """Every membership of the organization, locked: role changes and removals take
        this first, so two of them cannot together remove the last owner."""
        statement = (
            select(Membership)
            .where(Membership.organization_id == organization_id)
            .order_by(Membership.id)
            .with_for_update()
        )
        return list((await self.session.execute(statement)).scalars())

    async def list_members(self, organization_id: str) -> list[tuple[Membership, User]]:
        statement = (
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == organization_id)
            .order_by(Membership.id)
        )
        return [(row[0], row[1]) for row in (await self.session.execute(statement)).all()]

    async def count_owners(self, organization_id: str) -> int:
        statement = select(func.count()).where(
            Membership.organization_id == organization_id, Membership.role == "owner"
        )
        return int((await self.session.execute(statement)).scalar_one())


class InvitationRepository(Repository[Invitation]):
    model = Invitation

    async def get_for_organization(
        self, invitation_id: str, organization_id: str
    ) -> Invitation | None:
        statement = select(Invitation).where(
            Invitation.id == invitation_id, Invitation.organization_id == organization_id
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_by_token_hash(self, token_hash: str) -> Invitation | None:
        """The invitation, locked: two acceptances of one token are serialised, and the
        second finds it deleted."""
        statement = select(Invitation).where(Invitation.token_hash == token_hash).with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_by_email(self, *, organization_id: str, email: str) -> Invitation | None:
        statement = select(Invitation).where(
            Invitation.organization_id == organization_id, Invitation.email == email
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def list_for_organization(self, organization_id: str) -> list[Invitation]:
        statement = (
            select(Invitation)
            .where(Invitation.organization_id == organization_id)
            .order_by(Invitation.id)
        )
        return list((await self.session.execute(statement)).scalars())

    async def purge_expired(self, *, now: datetime) -> int:
        result = await self.session.execute(delete(Invitation).where(Invitation.expires_at <= now))
        return int(getattr(result, "rowcount", 0) or 0)

    async def list_open_for_email(self, email: str, *, now: datetime) -> list[Invitation]:
        statement = (
            select(Invitation)
            .where(Invitation.email == email, Invitation.expires_at > now)
            .order_by(Invitation.id)
        )
        return list((await self.session.execute(statement)).scalars())


def users(session: AsyncSession) -> UserRepository:
    return UserRepository(session)


def organizations(session: AsyncSession) -> OrganizationRepository:
    return OrganizationRepository(session)


def memberships(session: AsyncSession) -> MembershipRepository:
    return MembershipRepository(session)


def invitations(session: AsyncSession) -> InvitationRepository:
    return InvitationRepository(session)
