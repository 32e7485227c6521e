"""API keys: creation (shown once), listing, revocation and lookup by key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.accounts.service.members import membership_service
from tollway.api_keys import keys, repository
from tollway.api_keys.models import ApiKey
from tollway.audit.service import audit_service
from tollway.auth.principal import Principal
from tollway.auth.scopes import ALL_SCOPES, DEFAULT_API_KEY_SCOPES, ROLE_SCOPES
from tollway.errors import Conflict, Forbidden, NotFound, Unauthorized, Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox


class InvalidApiKey(Unauthorized):
    code = "invalid_api_key"
    title = "Invalid API key"


@dataclass(frozen=True, slots=True)
class CreatedKey:
    record: ApiKey
    key: str


@dataclass(frozen=True, slots=True)
class RolledKey:
    created: CreatedKey
    replaced: ApiKey


class ApiKeyService:
    async def create(
        self,
        session: AsyncSession,
        *,
        principal: Principal,
        name: str,
        scopes: list[str] | None,
        expires_at: datetime | None,
        environment: str,
        pepper: str,
        now: datetime,
    ) -> CreatedKey:
        """A new key for the caller's organization; it may not grant more than the caller has."""
        chosen = frozenset(scopes) if scopes is not None else DEFAULT_API_KEY_SCOPES
        unknown = sorted(chosen - ALL_SCOPES)
        if unknown:
            raise Unprocessable(f"unknown scopes: {', '.join(unknown)}", code="invalid_scope")
        beyond = sorted(chosen - await self._grantable(session, principal))
        if beyond:
            raise Forbidden(
                f"a key cannot grant scopes its creator lacks: {', '.join(beyond)}",
                code="insufficient_scope",
                required_scopes=beyond,
            )
        if expires_at is not None and expires_at <= now:
            raise Unprocessable("expires_at must be in the future", code="invalid_expiry")
        key = keys.generate(environment)
        record = ApiKey(
            id=new_id("key"),
            organization_id=principal.organization_id,
            created_by_user_id=principal.user_id,
            name=name,
            environment=environment,
            prefix=keys.display_prefix(key),
            key_hash=keys.digest(key, pepper),
            scopes=sorted(chosen),
            expires_at=expires_at,
            created_at=now,
        )
        await repository.api_keys(session).add(record)
        audit_service.record(
            session,
            action="api_key.created",
            target=record.id,
            organization_id=record.organization_id,
            details={"name": name, "scopes": record.scopes, "environment": environment},
            occurred_at=now,
        )
        return CreatedKey(record=record, key=key)

    async def _grantable(self, session: AsyncSession, principal: Principal) -> frozenset[str]:
        """What a new key may grant: the caller's scopes, within what the person behind
        them may do now. A user's role, or for an API key its creator's, is read from the
        membership in this transaction, not from a token or a cache: an admin demoted or
        removed since cannot mint keys with the rights they lost."""
        if principal.user_id is None:
            return principal.scopes
        membership = await membership_service.get_membership(
            session, user_id=principal.user_id, organization_id=principal.organization_id
        )
        role_scopes = ROLE_SCOPES[membership.role] if membership is not None else frozenset()
        return principal.scopes & role_scopes

    async def list(self, session: AsyncSession, *, organization_id: str) -> list[ApiKey]:
        return await repository.api_keys(session).list_for_organization(organization_id)

    async def revoke(
        self, session: AsyncSession, *, organization_id: str, key_id: str, now: datetime
    ) -> ApiKey:
        record = await repository.api_keys(session).get_for_organization(key_id, organization_id)
        if record is None:
            raise NotFound("no such API key")
        if record.revoked_at is not None:
            raise Conflict("this key is already revoked", code="api_key_revoked")
        await self._revoke(session, record, now=now)
        return record

    async def roll(
        self,
        session: AsyncSession,
        *,
        principal: Principal,
        key_id: str,
        grace: timedelta,
        pepper: str,
        now: datetime,
    ) -> RolledKey:
        """Replace a key without downtime: a new key with the same name, scopes,
        environment and expiry, while the old one keeps working for ``grace`` (then it
        expires; with no grace it is revoked at once). 409 ``api_key_revoked`` or
        ``api_key_expired`` for a key that no longer works; 404 for another
        organization's."""
        old = await repository.api_keys(session).get_for_organization(
            key_id, principal.organization_id, for_update=True
        )
        if old is None:
            raise NotFound("no such API key")
        if old.revoked_at is not None:
            raise Conflict("this key is already revoked", code="api_key_revoked")
        if old.expires_at is not None and old.expires_at <= now:
            raise Conflict("this key has expired; create a new one", code="api_key_expired")
        created = await self.create(
            session,
            principal=principal,
            name=old.name,
            scopes=list(old.scopes),
            expires_at=old.expires_at,
            environment=old.environment,
            pepper=pepper,
            now=now,
        )
        if grace <= timedelta(0):
            await self._revoke(session, old, now=now, reason="rolled")
        else:
            ends = now + grace
            old.expires_at = ends if old.expires_at is None else min(old.expires_at, ends)
            await session.flush()
        audit_service.record(
            session,
            action="api_key.rolled",
            target=old.id,
            organization_id=old.organization_id,
            details={"new_key_id": created.record.id, "grace_seconds": int(grace.total_seconds())},
            occurred_at=now,
        )
        await outbox.publish(
            session,
            "api_key.rolled",
            {
                "api_key_id": old.id,
                "new_api_key_id": created.record.id,
                "old_key_works_until": (old.revoked_at or old.expires_at or now).isoformat(),
            },
            organization_id=old.organization_id,
            occurred_at=now,
        )
        return RolledKey(created=created, replaced=old)

    async def revoke_created_by(
        self, session: AsyncSession, *, user_id: str, reason: str, actor: str, now: datetime
    ) -> Sequence[ApiKey]:
        """Revoke every key ``user_id`` created, in every organization (the user's
        credentials are void, e.g. an unverified account taken over by the owner of its
        email). Each is audited as ``api_key.revoked`` with ``details.reason``."""
        revoked = await repository.api_keys(session).list_unrevoked_created_by(user_id)
        for record in revoked:
            await self._revoke(session, record, now=now, reason=reason, actor=actor)
        return revoked

    async def _revoke(
        self,
        session: AsyncSession,
        record: ApiKey,
        *,
        now: datetime,
        reason: str | None = None,
        actor: str | None = None,
    ) -> None:
        record.revoked_at = now
        await session.flush()
        audit_service.record(
            session,
            action="api_key.revoked",
            target=record.id,
            organization_id=record.organization_id,
            actor=actor,
            details={"reason": reason} if reason is not None else None,
            occurred_at=now,
        )
        await outbox.publish(
            session,
            "api_key.revoked",
            {"api_key_id": record.id},
            organization_id=record.organization_id,
            occurred_at=now,
        )

    async def lookup(self, session: AsyncSession, *, key: str, pepper: str) -> ApiKey | None:
        """The stored key for ``key`` (any state), or None; garbage never reaches the DB."""
        if not keys.looks_valid(key):
            return None
        return await repository.api_keys(session).get_by_hash(keys.digest(key, pepper))

    async def record_use(self, session: AsyncSession, used: dict[str, datetime]) -> None:
        await repository.api_keys(session).touch_last_used(used)


api_key_service = ApiKeyService()
