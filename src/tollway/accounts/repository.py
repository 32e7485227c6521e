from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.models import Membership, Organization, User
from tollway.kit.repository import Repository


class UserRepository(Repository[User]):
    model = User

    async def get_by_email(self, email: str) -> User | None:
        statement = select(User).where(func.lower(User.email) == email.lower())
        return (await self.session.execute(statement)).scalar_one_or_none()


class OrganizationRepository(Repository[Organization]):
    model = Organization


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

    async def count_owners(self, organization_id: str) -> int:
        statement = select(func.count()).where(
            Membership.organization_id == organization_id, Membership.role == "owner"
        )
        return int((await self.session.execute(statement)).scalar_one())


def users(session: AsyncSession) -> UserRepository:
    return UserRepository(session)


def organizations(session: AsyncSession) -> OrganizationRepository:
    return OrganizationRepository(session)


def memberships(session: AsyncSession) -> MembershipRepository:
    return MembershipRepository(session)
