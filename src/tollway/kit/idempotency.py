"""Idempotency keys for unsafe requests, in the style Stripe made familiar.

A client sends ``Idempotency-Key: <key>`` with a POST (or PUT, PATCH, DELETE). The
first request runs; its answer is stored in the same transaction as its work, so
either both are kept or neither. A retry with the same key and the same request
replays the stored answer without running again; the same key with a different
request is refused with 409 ``idempotency_conflict``. Keys are scoped to the caller
(see :data:`IdempotencyScopeResolver`) and kept ``idempotency_ttl_seconds``.

Two concurrent first attempts cannot both run: on PostgreSQL the second insert of
the key waits on the unique index until the first commits and then replays it; on
SQLite write transactions are serialised.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from starlette.requests import Request

from tollway.errors import Conflict, Unprocessable
from tollway.kit.ids import new_id
from tollway.kit.models import Base, id_column
from tollway.kit.sweeps import SweepContext, register_sweep

MAX_KEY_LENGTH = 255
#: Response headers worth replaying; the rest (dates, request ids) belong to the retry.
REPLAYED_HEADERS = ("content-type", "location")

#: Returns the namespace a request's keys live in: the calling organization or
#: credential once identity is known, ``"anonymous"`` before.
IdempotencyScopeResolver = Callable[[Request], Awaitable[str]]


async def anonymous_scope(_request: Request) -> str:
    return "anonymous"


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key"),)

    id: Mapped[str] = id_column()
    scope: Mapped[str] = mapped_column(String(64), nullable=False)
    key: Mapped[str] = mapped_column(String(MAX_KEY_LENGTH), nullable=False)
    fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    method: Mapped[str] = mapped_column(String(8), nullable=False)
    path: Mapped[str] = mapped_column(String(500), nullable=False)
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_headers: Mapped[dict[str, Any] | None] = mapped_column()
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(nullable=False)
    expires_at: Mapped[datetime] = mapped_column(nullable=False, index=True)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes


def fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), query.encode()):
        digest.update(part)
        digest.update(b"\0")
    digest.update(body)
    return digest.hexdigest()


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable() or not key.isascii():
        raise Unprocessable(
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable ASCII characters",
            code="invalid_idempotency_key",
        )
    return key


class IdempotencyService:
    async def claim(
        self,
        session: AsyncSession,
        *,
        scope: str,
        key: str,
        request_fingerprint: str,
        method: str,
        path: str,
        now: datetime,
        ttl_seconds: int,
    ) -> IdempotencyKey | StoredResponse:
        """Reserve ``key`` for this request, or return the answer stored for it.

        Raises 409 ``idempotency_conflict`` when the key was used for another request.
        """
        existing = await self._get(session, scope=scope, key=key)
        if existing is not None and existing.expires_at <= now:
            await session.delete(existing)
            await session.flush()
            existing = None
        if existing is None:
            record = IdempotencyKey(
                id=new_id("idem"),
                scope=scope,
                key=key,
                fingerprint=request_fingerprint,
                method=method,
                path=path,
                created_at=now,
                expires_at=now + timedelta(seconds=ttl_seconds),
            )
            try:
                async with session.begin_nested():
                    session.add(record)
            except IntegrityError:
                # A concurrent request with the same key committed first.
                existing = await self._get(session, scope=scope, key=key)
                if existing is None:  # pragma: no cover - the winner rolled back meanwhile
                    raise Conflict(
                        "a request with this Idempotency-Key is in progress; retry",
                        code="idempotency_in_progress",
                    ) from None
            else:
                return record
        return self._replay(existing, request_fingerprint)

    def _replay(self, record: IdempotencyKey, request_fingerprint: str) -> StoredResponse:
        if record.fingerprint != request_fingerprint:
            raise Conflict(
                "this Idempotency-Key was used with a different request",
                code="idempotency_conflict",
            )
        if record.status_code is None or record.response_body is None:
            raise Conflict(
                "a request with this Idempotency-Key is in progress; retry",
                code="idempotency_in_progress",
            )
        return StoredResponse(
            status_code=record.status_code,
            headers=dict(record.response_headers or {}),
            body=record.response_body,
        )

    async def complete(
        self,
        session: AsyncSession,
        record: IdempotencyKey,
        *,
        status_code: int,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        record.status_code = status_code
        record.response_headers = {
            name: value for name, value in headers.items() if name.lower() in REPLAYED_HEADERS
        }
        record.response_body = body
        await session.flush()

    async def purge_expired(self, session: AsyncSession, *, now: datetime) -> int:
        result = await session.execute(
            delete(IdempotencyKey).where(IdempotencyKey.expires_at <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _get(self, session: AsyncSession, *, scope: str, key: str) -> IdempotencyKey | None:
        statement = select(IdempotencyKey).where(
            IdempotencyKey.scope == scope, IdempotencyKey.key == key
        )
        return (await session.execute(statement)).scalar_one_or_none()


idempotency_service = IdempotencyService()


@register_sweep("idempotency.purge_expired", interval_seconds=300)
async def purge_expired_keys(context: SweepContext) -> int:
    """Forget answers older than ``idempotency_ttl_seconds``."""
    async with context.database.transaction() as session:
        return await idempotency_service.purge_expired(session, now=context.clock.now())
