"""The request edge: every API route runs inside one transaction it owns.

:class:`TransactionalRoute` opens the request's transaction lazily (only a handler
that asks for a session gets one), commits it after the handler has produced its
answer and *before* the answer is sent, and rolls it back when the handler raises.
A client therefore never sees a success whose writes are not durable.

It also implements ``Idempotency-Key`` for unsafe methods (see
:mod:`tollway.kit.idempotency`): the key is claimed and the answer stored in the
same transaction as the work. The key is claimed only once the route's dependencies
are solved, so the caller is authenticated and authorized (scope, role) before an
answer is replayed to them; keys live per credential (``app.state.idempotency_scope``).
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from typing import Annotated, Any, Protocol, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import Response

from tollway.config import Settings
from tollway.db import Database, Transaction
from tollway.errors import TollwayError
from tollway.kit.clock import Clock
from tollway.kit.idempotency import (
    IdempotencyKey,
    StoredResponse,
    anonymous_scope,
    fingerprint,
    idempotency_service,
    validate_key,
)
from tollway.kit.pagination import DEFAULT_LIMIT, MAX_LIMIT, PageParams, page_of

T = TypeVar("T")


class SharedCommit(Protocol):
    """The group committer's face to the request edge (app.state.shared_commit)."""

    async def run_keeping_errors(
        self, work: Callable[[AsyncSession], Coroutine[Any, Any, T]]
    ) -> T: ...


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
IDEMPOTENT_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


#: The request whose endpoint is about to run (set by TransactionalRoute's handler for
#: requests with ``Idempotency-Key``), for the claim made between the dependencies and
#: the endpoint.
_idempotent_request: ContextVar[Request | None] = ContextVar("idempotent_request", default=None)
#: The key claimed for a request (``request.state``), whose answer is stored after it.
_CLAIM = "idempotency_claim"
#: Endpoints already preceded by the claim.
_CLAIMING_ENDPOINTS: weakref.WeakSet[Callable[..., Any]] = weakref.WeakSet()


class TransactionalRoute(APIRoute):
    #: Whether the route only reads although its method is unsafe (see ReadOnlyRoute).
    read_only = False

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        # ``include_router`` builds a route again from a route's (wrapped) endpoint.
        wrapped = endpoint in _CLAIMING_ENDPOINTS
        if not self.read_only and not wrapped and inspect.iscoroutinefunction(endpoint):
            endpoint = _claim_before(endpoint)
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint_handler = super().get_route_handler()
        read_only = self.read_only

        async def handler(request: Request) -> Response:
            database: Database = request.app.state.database
            write = request.method not in SAFE_METHODS and not read_only
            transaction = database.transaction(write=write)
            request.state.transaction = transaction
            try:
                if read_only:
                    # Nothing is written, so there is nothing to replay: no key is claimed.
                    response = await endpoint_handler(request)
                else:
                    response = await _run(request, transaction, endpoint_handler)
            except TollwayError as error:
                if error.commit_transaction:
                    await transaction.commit()
                else:
                    await transaction.rollback()
                raise
            except BaseException:
                await transaction.rollback()
                raise
            await transaction.commit()
            return response

        return handler


class ReadOnlyRoute(TransactionalRoute):
    """A POST that only reads (a query too rich for a query string: search, resolve).
    Its transaction is a read scope, so on SQLite it never waits for, or holds up, the
    writer; ``Idempotency-Key`` is not needed and ignored. Declare it with
    ``router.add_api_route(..., methods=["POST"], route_class_override=ReadOnlyRoute)``."""

    read_only = True


def _claim_before(endpoint: Callable[..., Coroutine[Any, Any, Any]]) -> Callable[..., Any]:
    """The endpoint, preceded by the claim of the request's ``Idempotency-Key``.

    FastAPI calls it once every dependency is solved: the credential was authenticated
    and holds the route's scope or role (a 401 or 403 otherwise, never a replay), and
    the body is valid. A stored answer is returned as it was; FastAPI sends a returned
    Response untouched. ``functools.wraps`` keeps the signature FastAPI reads.
    """

    @functools.wraps(endpoint)
    async def claim_then_run(*args: Any, **kwargs: Any) -> Any:
        request = _idempotent_request.get()
        if request is not None:
            _idempotent_request.set(None)
            replay = await _claim(request)
            if replay is not None:
                return replay
        return await endpoint(*args, **kwargs)

    _CLAIMING_ENDPOINTS.add(claim_then_run)
    return claim_then_run


async def _run(
    request: Request,
    transaction: Transaction,
    endpoint_handler: Callable[[Request], Coroutine[Any, Any, Response]],
) -> Response:
    raw_key = request.headers.get("idempotency-key")
    if raw_key is None or request.method not in IDEMPOTENT_METHODS:
        return await endpoint_handler(request)
    validate_key(raw_key.strip())
    marker = _idempotent_request.set(request)
    try:
        response = await endpoint_handler(request)
    except TollwayError as error:
        claim: IdempotencyKey | None = getattr(request.state, _CLAIM, None)
        if error.commit_transaction and claim is not None:
            # The request's writes are kept but it answers an error: release the key, or
            # it would stay "in progress" and refuse every retry until it expires.
            session = await transaction.begin()
            await session.delete(claim)
            await session.flush()
        raise
    finally:
        _idempotent_request.reset(marker)
    claim = getattr(request.state, _CLAIM, None)
    if claim is not None:
        await _remember(await transaction.begin(), claim, response)
    return response


async def _claim(request: Request) -> Response | None:
    """Claim the request's key in its transaction; the stored answer if it has one."""
    key = validate_key(str(request.headers.get("idempotency-key", "")).strip())
    settings: Settings = request.app.state.settings
    clock: Clock = request.app.state.clock
    resolve_scope = getattr(request.app.state, "idempotency_scope", anonymous_scope)
    body = await request.body()
    transaction: Transaction = request.state.transaction
    session = await transaction.begin()
    claim = await idempotency_service.claim(
        session,
        scope=await resolve_scope(request),
        key=key,
        request_fingerprint=fingerprint(request.method, request.url.path, request.url.query, body),
        method=request.method,
        path=request.url.path[:500],
        now=clock.now(),
        ttl_seconds=settings.idempotency_ttl_seconds,
    )
    if isinstance(claim, StoredResponse):
        return Response(
            content=claim.body,
            status_code=claim.status_code,
            headers={**claim.headers, "Idempotent-Replayed": "true"},
        )
    setattr(request.state, _CLAIM, claim)
    return None


async def _remember(session: AsyncSession, claim: IdempotencyKey, response: Response) -> None:
    body = getattr(response, "body", None)
    if response.status_code >= 500 or not isinstance(body, bytes):
        # Nothing replayable: forget the key so a retry runs again.
        await session.delete(claim)
        await session.flush()
        return
    await idempotency_service.complete(
        session,
        claim,
        status_code=response.status_code,
        headers=dict(response.headers),
        body=body,
    )


def api_router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose routes own their transaction; every domain router is one."""
    return APIRouter(route_class=TransactionalRoute, **kwargs)


async def get_session(request: Request) -> AsyncSession:
    """The request's transaction session (opened on first use, committed by the route)."""
    transaction: Transaction | None = getattr(request.state, "transaction", None)
    if transaction is None:
        raise RuntimeError("get_session used on a route that is not a TransactionalRoute")
    return await transaction.begin()


async def in_shared_commit(
    request: Request, work: Callable[[AsyncSession], Coroutine[Any, Any, T]]
) -> T:
    """Run a write of the hot path in the process's group commit (a transaction shared
    with the concurrent requests' writes, committed once for all of them) instead of the
    request's own transaction; it returns once that transaction committed.

    With ``Idempotency-Key`` the work runs in the request's own transaction, where the
    key and the stored answer commit with it. Errors that keep their writes
    (``commit_transaction``) keep them here too.
    """
    if request.headers.get("idempotency-key") is not None:
        return await work(await get_session(request))
    runner: SharedCommit = request.app.state.shared_commit
    return await runner.run_keeping_errors(work)


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in
# a thread pool, a thread hop per request for what is an attribute read.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


async def get_wall_clock(request: Request) -> Clock:
    """Security time: what access and refresh tokens, sessions, lock-outs, one-time
    tokens and license tokens are stamped and judged by. Real time, never moved by the
    sandbox's test clock (tests inject a clock of their own)."""
    clock: Clock = request.app.state.wall_clock
    return clock


async def get_database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


async def page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="items per page")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=64, description="next_cursor of the previous page")
    ] = None,
) -> PageParams:
    return page_of(limit, cursor)


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ClockDep = Annotated[Clock, Depends(get_clock)]
WallClockDep = Annotated[Clock, Depends(get_wall_clock)]
DatabaseDep = Annotated[Database, Depends(get_database)]
#: ``?limit=&cursor=`` of a list (:mod:`tollway.kit.pagination`).
PageParamsDep = Annotated[PageParams, Depends(page_params)]
