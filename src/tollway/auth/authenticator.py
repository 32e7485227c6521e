"""Turns ``Authorization: Bearer ...`` (or, without that header, the dashboard's
session cookie) into a Principal, fast.

API keys are looked up by their HMAC and cached per process for at most
``CACHE_SECONDS`` (one second) of the business clock; revoked access tokens are
reloaded as often. So a revocation made by any process is refused by every other
process within a second, on SQLite and PostgreSQL alike, with one small query per
second per process instead of one per request.

``last_used_at`` of keys is collected in memory and written in batches, never on
every request.

Dashboard sessions are cached the same way (so logout and role changes reach every
process within a second); unsafe requests authenticated by the cookie must carry the
session's CSRF token (403 ``csrf_failed``), see :mod:`tollway.auth.sessions`.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request

from tollway.accounts.service.members import membership_service
from tollway.accounts.service.users import user_service
from tollway.api_keys.keys import digest
from tollway.api_keys.service import InvalidApiKey, api_key_service
from tollway.auth import repository
from tollway.auth.dependencies import optional_principal
from tollway.auth.principal import Principal
from tollway.auth.scopes import ROLE_SCOPES
from tollway.auth.sessions import (
    CSRF_FORM_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    CsrfFailed,
    InvalidSession,
    SessionSnapshot,
    dashboard_session_service,
    hash_session_token,
)
from tollway.auth.tokens import InvalidToken, decode_access_token
from tollway.config import Settings
from tollway.db import Database
from tollway.errors import Forbidden, Unauthorized
from tollway.kit.cache import TTLCache
from tollway.kit.clock import Clock
from tollway.kit.routing import SAFE_METHODS
from tollway.kit.signing import KeyRing

log = structlog.get_logger("tollway.auth")

CACHE_SECONDS = 1.0
MAX_CACHED_KEYS = 50_000
LAST_USED_FLUSH_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class _KeySnapshot:
    id: str
    organization_id: str
    scopes: frozenset[str]
    expires_at: datetime | None
    revoked_at: datetime | None
    created_by_user_id: str | None


class TollwayAuthenticator:
    def __init__(
        self, *, database: Database, settings: Settings, clock: Clock, keys: KeyRing
    ) -> None:
        self.database = database
        self.clock = clock
        self.keys = keys
        self._pepper = settings.secret("api_key_pepper")
        self._cache_ttl = timedelta(seconds=CACHE_SECONDS)
        self._keys: TTLCache[str, _KeySnapshot | None] = TTLCache(
            ttl=self._cache_ttl, max_entries=MAX_CACHED_KEYS
        )
        self._sessions: TTLCache[str, SessionSnapshot | None] = TTLCache(
            ttl=self._cache_ttl, max_entries=MAX_CACHED_KEYS
        )
        self._revoked: set[str] = set()
        self._revoked_loaded_at: datetime | None = None
        self._used: dict[str, datetime] = {}
        self._last_flush = time.monotonic()
        self._flushing: asyncio.Task[None] | None = None

    async def authenticate(self, request: Request) -> Principal | None:
        header = request.headers.get("authorization")
        if header is None:
            cookie = request.cookies.get(SESSION_COOKIE)
            return await self._cookie_principal(request, cookie) if cookie else None
        scheme, _, credential = header.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise InvalidToken("send credentials as 'Authorization: Bearer <token>'")
        return await self.principal_for(credential)

    async def principal_for(self, credential: str) -> Principal:
        if credential.startswith("tw_"):
            return await self._api_key_principal(credential)
        return await self._access_token_principal(credential)

    async def _access_token_principal(self, token: str) -> Principal:
        now = self.clock.now()
        claims = decode_access_token(self.keys, token, now=now)
        if claims.token_id in await self._revoked_tokens(now):
            raise InvalidToken("this access token was revoked; log in again")
        standing = await self._standing(claims.user_id, claims.organization_id, now)
        if standing is None:
            raise InvalidToken("this account is no longer a member of this organization")
        role, is_platform_admin = standing
        return Principal(
            kind="user",
            organization_id=claims.organization_id,
            role=role,
            scopes=ROLE_SCOPES[role],
            user_id=claims.user_id,
            is_platform_admin=is_platform_admin,
            token_id=claims.token_id,
            extra={"tier": claims.tier},
        )

    async def _standing(
        self, user_id: str, organization_id: str, now: datetime
    ) -> tuple[str, bool] | None:
        """The user's current role in the organization and platform-admin flag, or None
        when they are no longer a member. A token or session carries what was true when
        it was issued; this is what is true now (read at most once a second per process,
        and at once after a change made in this process)."""
        membership = membership_service.cached_membership(
            user_id=user_id, organization_id=organization_id, now=now
        )
        user = user_service.cached_user(user_id, now=now)
        if membership is None or (membership.role is not None and user is None):
            async with self.database.transaction(write=False) as session:
                membership = await membership_service.membership_view(
                    session, user_id=user_id, organization_id=organization_id, now=now
                )
                if membership.role is not None:
                    user = await user_service.user_view(session, user_id, now=now)
        if membership.role is None or user is None:
            return None
        return membership.role, user.is_platform_admin

    async def _cookie_principal(self, request: Request, token: str) -> Principal:
        now = self.clock.now()
        snapshot = await self._session_snapshot(token, now)
        if snapshot is None or snapshot.expires_at <= now:
            raise InvalidSession("the dashboard session expired or was closed; log in again")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER)
            if sent is None and request.headers.get("content-type", "").startswith(
                ("application/x-www-form-urlencoded", "multipart/form-data")
            ):
                field = (await request.form()).get(CSRF_FORM_FIELD)
                sent = field if isinstance(field, str) else None
            if sent is None or not hmac.compare_digest(sent, snapshot.csrf_token):
                raise CsrfFailed(
                    f"send the session's CSRF token in the {CSRF_HEADER} header "
                    "(it is in the tollway_csrf cookie)"
                )
        standing = await self._standing(snapshot.user_id, snapshot.organization_id, now)
        if standing is None:
            raise InvalidSession("this account is no longer a member of this organization")
        role, is_platform_admin = standing
        return Principal(
            kind="user",
            organization_id=snapshot.organization_id,
            role=role,
            scopes=ROLE_SCOPES[role],
            user_id=snapshot.user_id,
            is_platform_admin=is_platform_admin,
            extra={"session_id": snapshot.session_id},
        )

    async def _session_snapshot(self, token: str, now: datetime) -> SessionSnapshot | None:
        token_hash = hash_session_token(token)
        hit, cached = self._sessions.get(token_hash, now=now)
        if hit:
            return cached
        async with self.database.transaction(write=False) as session:
            snapshot = await dashboard_session_service.resolve(session, token=token, now=now)
        self._sessions.put(token_hash, snapshot, now=now)
        return snapshot

    def forget_session(self, session_id: str) -> None:
        """Drop a dashboard session from this process's cache at once (closed here)."""
        self._sessions.discard_where(
            lambda snapshot: snapshot is not None and snapshot.session_id == session_id
        )

    async def _revoked_tokens(self, now: datetime) -> set[str]:
        loaded_at = self._revoked_loaded_at
        if loaded_at is None or not (loaded_at <= now < loaded_at + self._cache_ttl):
            async with self.database.transaction(write=False) as session:
                self._revoked = await repository.revoked_tokens(session).list_active(now=now)
            self._revoked_loaded_at = now
        return self._revoked

    async def _api_key_principal(self, key: str) -> Principal:
        now = self.clock.now()
        snapshot = await self._key_snapshot(key, now)
        if snapshot is None:
            raise InvalidApiKey("this API key is not valid")
        if snapshot.revoked_at is not None and snapshot.revoked_at <= now:
            raise InvalidApiKey("this API key was revoked")
        if snapshot.expires_at is not None and snapshot.expires_at <= now:
            raise InvalidApiKey("this API key has expired")
        self._note_use(snapshot.id, now)
        return Principal(
            kind="api_key",
            organization_id=snapshot.organization_id,
            role="api_key",
            scopes=snapshot.scopes,
            user_id=snapshot.created_by_user_id,
            api_key_id=snapshot.id,
        )

    async def _key_snapshot(self, key: str, now: datetime) -> _KeySnapshot | None:
        key_hash = digest(key, self._pepper)
        hit, cached = self._keys.get(key_hash, now=now)
        if hit:
            return cached
        async with self.database.transaction(write=False) as session:
            record = await api_key_service.lookup(session, key=key, pepper=self._pepper)
            snapshot = (
                None
                if record is None
                else _KeySnapshot(
                    id=record.id,
                    organization_id=record.organization_id,
                    scopes=frozenset(record.scopes),
                    expires_at=record.expires_at,
                    revoked_at=record.revoked_at,
                    created_by_user_id=record.created_by_user_id,
                )
            )
        self._keys.put(key_hash, snapshot, now=now)
        return snapshot

    def forget_api_key(self, key_id: str) -> None:
        """Drop a key from this process's cache at once (its revocation was made here)."""
        self._keys.discard_where(lambda snapshot: snapshot is not None and snapshot.id == key_id)

    def note_revoked_token(self, token_id: str) -> None:
        """Refuse an access token in this process at once (it was revoked here)."""
        self._revoked.add(token_id)

    def _note_use(self, key_id: str, now: datetime) -> None:
        self._used[key_id] = now
        if (
            time.monotonic() - self._last_flush >= LAST_USED_FLUSH_SECONDS
            and self._flushing is None
        ):
            self._flushing = asyncio.create_task(self.flush_last_used())

    async def flush_last_used(self) -> None:
        """Write the collected ``last_used_at`` times (called in the background and at exit)."""
        used, self._used = self._used, {}
        self._last_flush = time.monotonic()
        try:
            if used:
                async with self.database.transaction() as session:
                    await api_key_service.record_use(session, used)
        except SQLAlchemyError:
            log.warning("api_keys.last_used_flush_failed", keys=len(used), exc_info=True)
        finally:
            self._flushing = None

    async def idempotency_scope(self, request: Request) -> str:
        """Idempotency keys live per credential: the organization and the API key or the
        user calling. Another credential of the organization, with other rights, never
        gets an answer stored for this one (a new key, an invitation's token)."""
        try:
            principal = await optional_principal(request)
        except (Unauthorized, Forbidden):
            # The route's own authentication answers 401 (or 403 csrf_failed); nothing
            # will be stored.
            return "anonymous"
        if principal is None:
            return "anonymous"
        credential = principal.api_key_id if principal.kind == "api_key" else principal.user_id
        return f"{principal.organization_id}/{credential}"
