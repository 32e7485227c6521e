"""Credits: balance, ledger, holds (reserve -> commit/release) and admin grants."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Request

from tollway.auth.dependencies import AdminPrincipal
from tollway.kit.pagination import Page
from tollway.kit.routing import (
    ClockDep,
    PageParamsDep,
    SessionDep,
    SettingsDep,
    api_router,
    in_shared_commit,
)
from tollway.ledger import schemas
from tollway.ledger.abuse import abuse_service
from tollway.ledger.auth import CreditsReader, CreditsWriter, spending_subject
from tollway.ledger.models import CreditGrant, FraudFlag, Reservation, ReservationStatus
from tollway.ledger.service.grants import grant_service
from tollway.ledger.service.holds import hold_service
from tollway.ledger.service.transfers import transfer_service

router = api_router(prefix="/api/v1", tags=["credits"])

ReservationId = Annotated[str, Path(max_length=40, description="the hold's id (res_...)")]


def _grant(grant: CreditGrant) -> schemas.GrantOut:
    return schemas.GrantOut(
        id=grant.id,
        amount=grant.amount,
        remaining=grant.remaining,
        expires_at=grant.expires_at,
        source=grant.source,
        priority=grant.priority,
    )


def _reservation(reservation: Reservation) -> schemas.ReservationOut:
    return schemas.ReservationOut(
        id=reservation.id,
        amount=reservation.amount,
        status=reservation.status,
        expires_at=reservation.expires_at,
        feature=reservation.feature,
        committed=reservation.committed,
        released=reservation.released,
        created_at=reservation.created_at,
        settled_at=reservation.settled_at,
    )


def _flag(flag: FraudFlag) -> schemas.FraudFlagOut:
    return schemas.FraudFlagOut(
        id=flag.id,
        organization_id=flag.organization_id,
        subject=flag.subject,
        credits_in_window=flag.credits_in_window,
        threshold=flag.threshold,
        window_started_at=flag.window_started_at,
        created_at=flag.created_at,
    )


@router.get("/credits/balance")
async def get_balance(
    principal: CreditsReader, session: SessionDep, clock: ClockDep
) -> schemas.BalanceOut:
    """The organization's credits: `balance` (granted - spent - expired), `reserved` (held),
    `available` (`balance - reserved`), and the live grants in spending order (priority,
    then earliest expiry, then oldest)."""
    balance = await transfer_service.balance(
        session, organization_id=principal.organization_id, now=clock.now()
    )
    return schemas.BalanceOut(
        balance=balance.balance,
        reserved=balance.reserved,
        available=balance.available,
        grants=[_grant(grant) for grant in balance.grants],
    )


@router.get("/credits/ledger")
async def get_ledger(
    principal: CreditsReader,
    session: SessionDep,
    params: PageParamsDep,
) -> Page[schemas.LedgerEntryOut]:
    """The organization's ledger entries, newest first. Each transfer (grant, reserve,
    commit, release, expire, reverse) has entries on two or more accounts summing to zero."""
    page = await transfer_service.list_entries(
        session, organization_id=principal.organization_id, params=params
    )
    return Page(
        items=[
            schemas.LedgerEntryOut(
                id=entry.id,
                transfer_id=entry.transfer_id,
                account=entry.account_kind,
                kind=entry.transfer_kind,
                amount=entry.amount,
                occurred_at=entry.occurred_at,
            )
            for entry in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get("/credits/reservations")
async def list_reservations(
    principal: CreditsReader,
    session: SessionDep,
    params: PageParamsDep,
    status: Annotated[
        ReservationStatus | None, Query(description="only holds in this state")
    ] = None,
) -> Page[schemas.ReservationOut]:
    """The organization's holds, newest first: `?status=held` lists the open ones (a
    client that restarted finds what it still holds and commits or releases it)."""
    page = await hold_service.list_reservations(
        session,
        organization_id=principal.organization_id,
        params=params,
        status=status.value if status is not None else None,
    )
    return Page(items=[_reservation(row) for row in page.items], next_cursor=page.next_cursor)


@router.get("/credits/reservations/{reservation_id}")
async def get_reservation(
    reservation_id: ReservationId, principal: CreditsReader, session: SessionDep
) -> schemas.ReservationOut:
    """One hold and how it ended (`committed`, `released`, `settled_at`); 404
    `hold_not_found` for a hold of another organization."""
    reservation = await hold_service.get_reservation(
        session, organization_id=principal.organization_id, reservation_id=reservation_id
    )
    return _reservation(reservation)


@router.post("/credits/reservations", status_code=201)
async def create_reservation(
    body: schemas.ReservationIn,
    principal: CreditsWriter,
    request: Request,
    clock: ClockDep,
    settings: SettingsDep,
) -> schemas.ReservationOut:
    """Hold `amount` credits for `ttl_seconds` (default 30 s). The hold is released by
    itself when neither committed nor released in time. Runs the abuse battery first,
    with the limits of the organization's plan (`[plans.<id>.abuse]` in the catalog) and
    its per-organization overrides (`rate_limited`, `too_frequent`, `temporarily_blocked`
    with `Retry-After`; `request_too_large`). 402 `insufficient_credits` when fewer are available.
    Send `Idempotency-Key` to make retries safe."""
    reservation = await in_shared_commit(
        request,
        lambda session: hold_service.reserve(
            session,
            organization_id=principal.organization_id,
            amount=body.amount,
            now=clock.now(),
            ttl_seconds=body.ttl_seconds or settings.credits_hold_ttl_seconds,
            max_ttl_seconds=settings.credits_hold_max_ttl_seconds,
            feature=body.feature,
            subject=spending_subject(principal),
            check_abuse=True,
        ),
    )
    return _reservation(reservation)


@router.post("/credits/reservations/{reservation_id}/commit")
async def commit_reservation(
    reservation_id: ReservationId,
    principal: CreditsWriter,
    request: Request,
    clock: ClockDep,
    settings: SettingsDep,
    body: schemas.ReservationCommitIn | None = None,
) -> schemas.ReservationCommittedOut:
    """Spend `amount` credits of the hold (default: all of it) and return the rest.
    409 `hold_not_active` once released or expired, 422 `amount_exceeds_hold` above the
    held amount, 422 `output_too_large` when `output_units` exceeds the plan's
    `max_output_units` (or the organization's override of it)."""
    body = body or schemas.ReservationCommitIn()
    result = await in_shared_commit(
        request,
        lambda session: hold_service.commit(
            session,
            organization_id=principal.organization_id,
            reservation_id=reservation_id,
            now=clock.now(),
            amount=body.amount,
            output_units=body.output_units,
            low_balance_threshold=settings.credits_low_balance_threshold,
        ),
    )
    return schemas.ReservationCommittedOut(
        id=result.reservation.id,
        status=result.reservation.status,
        committed=result.committed,
        released=result.released,
    )


@router.post("/credits/reservations/{reservation_id}/release")
async def release_reservation(
    reservation_id: ReservationId, principal: CreditsWriter, session: SessionDep, clock: ClockDep
) -> schemas.ReservationReleasedOut:
    """Give the whole hold back. Releasing twice is harmless; a committed hold answers
    409 `hold_not_active`."""
    reservation = await hold_service.release(
        session,
        organization_id=principal.organization_id,
        reservation_id=reservation_id,
        now=clock.now(),
    )
    return schemas.ReservationReleasedOut(
        id=reservation.id, status=reservation.status, released=reservation.released or 0
    )


@router.post("/admin/credits/grant", status_code=201, tags=["admin"])
async def admin_grant(
    body: schemas.AdminGrantIn,
    principal: AdminPrincipal,
    session: SessionDep,
    clock: ClockDep,
    settings: SettingsDep,
) -> schemas.AdminGrantOut:
    """Platform administrators: grant credits to any organization (audited, with a reason)."""
    grant = await grant_service.grant(
        session,
        organization_id=body.organization_id,
        amount=body.amount,
        source=body.source,
        now=clock.now(),
        expires_at=body.expires_at,
        reason=body.reason,
        low_balance_threshold=settings.credits_low_balance_threshold,
    )
    return schemas.AdminGrantOut(
        id=grant.id,
        organization_id=grant.organization_id,
        amount=grant.amount,
        source=grant.source,
        expires_at=grant.expires_at,
        reason=grant.reason,
    )


@router.get("/admin/fraud-flags", tags=["admin"])
async def list_fraud_flags(
    principal: AdminPrincipal,
    session: SessionDep,
    params: PageParamsDep,
    organization_id: Annotated[str | None, Query(max_length=40)] = None,
) -> Page[schemas.FraudFlagOut]:
    """Platform administrators: subjects that spent more credits in an hour than the
    abuse policy's fraud threshold, newest first. Flags never deny a request."""
    page = await abuse_service.list_fraud_flags(
        session, params=params, organization_id=organization_id
    )
    return Page(items=[_flag(flag) for flag in page.items], next_cursor=page.next_cursor)
