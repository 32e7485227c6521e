"""The abuse battery: limits on how fast and how much a subject may spend.

The entitlements decision (``POST /api/v1/authorize``) and the reservation endpoint
both run it before credits move. Its memory (per organization and subject: a one-minute
request window, the last request, a one-hour credit window, recent failures, a block)
lives in the ``credit_abuse_states`` table, so every process sees the same state, and
all times come from the caller's clock.

Checks, first failure wins:

1. ``temporarily_blocked`` (429): ``max_failures`` failed or released operations within
   ``failure_window_seconds`` block the subject for ``block_seconds`` (released or
   expired holds and refused outputs; a refusal for lack of credits is no failure);
2. ``request_too_large`` (422): more than ``max_credits_per_request`` credits at once;
3. ``rate_limited`` (429): more than ``requests_per_minute`` credit-spending requests in
   the current minute;
4. ``too_frequent`` (429): less than ``min_interval_seconds`` since the previous one.

Subjects are named by :func:`tollway.ledger.auth.spending_subject` on every path.

Spending more than ``fraud_credits_per_hour`` credits within an hour raises a fraud flag
(a ``credits.fraud_flagged`` event and a row in ``GET /api/v1/admin/fraud-flags``) once
per hour window; it never denies. A commit reporting more than ``max_output_units`` is
refused with ``output_too_large``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from tollway.kit.ids import new_id
from tollway.kit.outbox import outbox
from tollway.kit.pagination import PageParams, PageResult
from tollway.ledger import repository
from tollway.ledger.errors import AbuseDenied, OutputTooLarge, RequestTooLarge
from tollway.ledger.models import AbuseState, FraudFlag
from tollway.plans.catalog import AbuseLimits

#: How many failure timestamps a subject keeps (more than any sensible ``max_failures``).
_KEPT_FAILURES = 50


@dataclass(frozen=True, slots=True)
class AbusePolicy:
    """Limits of the battery; the defaults are the seed's. Each plan carries its own
    (``[plans.<id>.abuse]`` in the catalog), and an organization's override changes them."""

    requests_per_minute: int = 30
    min_interval_seconds: float = 3.0
    max_credits_per_request: int = 10
    max_output_units: int = 2000
    fraud_credits_per_hour: int = 500
    max_failures: int = 5
    failure_window_seconds: int = 15 * 60
    block_seconds: int = 15 * 60

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> AbusePolicy:
        """The defaults overridden by ``values`` (unknown names are refused)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown abuse policy setting(s): {', '.join(unknown)}")
        return replace(cls(), **dict(values))

    @classmethod
    def from_limits(cls, limits: AbuseLimits) -> AbusePolicy:
        """The policy for a plan's catalog limits (``[plans.<id>.abuse]``, overrides applied)."""
        return cls(**{name: getattr(limits, name) for name in AbuseLimits.__slots__})


DEFAULT_POLICY = AbusePolicy()


@dataclass(frozen=True, slots=True)
class AbuseDecision:
    allowed: bool
    code: str | None = None
    retry_after: int | None = None
    detail: str | None = None

    def raise_if_denied(self) -> None:
        if self.allowed:
            return
        if self.code == "request_too_large":
            raise RequestTooLarge(self.detail)
        raise AbuseDenied(self.detail, code=self.code, retry_after=self.retry_after or 1)


def subject_key(organization_id: str, subject: str | None) -> str:
    """Who the battery counts: the given subject, else the organization as a whole."""
    return subject or f"organization:{organization_id}"


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


def _failure_times(state: AbuseState) -> list[datetime]:
    return [datetime.fromisoformat(value) for value in state.failures.get("at", [])]


class AbuseService:
    async def evaluate(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        subject: str | None,
        credits: int,
        now: datetime,
        policy: AbusePolicy = DEFAULT_POLICY,
    ) -> AbuseDecision:
        """Decide whether ``subject`` may spend ``credits`` now; an allowed request is
        counted (and may raise a fraud flag). A denied one changes nothing.

        The entitlements decision calls this and answers ``allowed: false`` with the
        decision's ``code``; :meth:`enforce` raises the matching error instead.
        """
        state = await repository.get_abuse_state(
            session,
            organization_id=organization_id,
            subject=subject_key(organization_id, subject),
            now=now,
        )
        blocked = self._blocked_until(state, now=now, policy=policy)
        if blocked is not None:
            return AbuseDecision(
                False,
                "temporarily_blocked",
                _seconds_until(blocked, now),
                "too many failed or released operations; temporarily blocked",
            )
        if credits > policy.max_credits_per_request:
            return AbuseDecision(
                False,
                "request_too_large",
                None,
                f"at most {policy.max_credits_per_request} credits per request",
            )
        minute = timedelta(minutes=1)
        if state.minute_started_at is None or now - state.minute_started_at >= minute:
            state.minute_started_at = now
            state.minute_requests = 0
        if state.minute_requests >= policy.requests_per_minute:
            return AbuseDecision(
                False,
                "rate_limited",
                _seconds_until(state.minute_started_at + minute, now),
                f"at most {policy.requests_per_minute} credit-spending requests a minute",
            )
        gap = timedelta(seconds=policy.min_interval_seconds)
        # ``now`` is read before the caller waited for the organization's lock, so a
        # concurrent request may have stored a later time: with no minimum gap that is
        # no reason to refuse.
        if gap and state.last_request_at is not None and now - state.last_request_at < gap:
            return AbuseDecision(
                False,
                "too_frequent",
                _seconds_until(state.last_request_at + gap, now),
                f"at least {policy.min_interval_seconds:g} s between credit-spending requests",
            )
        state.minute_requests += 1
        state.last_request_at = max(now, state.last_request_at or now)
        await self._count_credits(session, state, credits=credits, now=now, policy=policy)
        return AbuseDecision(True)

    async def enforce(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        subject: str | None,
        credits: int,
        now: datetime,
        policy: AbusePolicy = DEFAULT_POLICY,
    ) -> None:
        """:meth:`evaluate`, raising the denial as a problem (429 with ``Retry-After``)."""
        decision = await self.evaluate(
            session,
            organization_id=organization_id,
            subject=subject,
            credits=credits,
            now=now,
            policy=policy,
        )
        decision.raise_if_denied()

    def check_output(
        self, output_units: int | None, *, policy: AbusePolicy = DEFAULT_POLICY
    ) -> None:
        """Refuse a commit whose reported output exceeds the policy (``output_too_large``)."""
        if output_units is not None and output_units > policy.max_output_units:
            raise OutputTooLarge(
                f"output of {output_units} units exceeds the limit of {policy.max_output_units}",
                limit=policy.max_output_units,
            )

    async def record_failure(
        self,
        session: AsyncSession,
        *,
        organization_id: str,
        subject: str | None,
        now: datetime,
    ) -> None:
        """Remember a failed or released operation; enough of them block the subject."""
        state = await repository.get_abuse_state(
            session,
            organization_id=organization_id,
            subject=subject_key(organization_id, subject),
            now=now,
        )
        times = [*state.failures.get("at", []), now.isoformat()]
        state.failures = {"at": times[-_KEPT_FAILURES:]}
        await session.flush()

    def _blocked_until(
        self, state: AbuseState, *, now: datetime, policy: AbusePolicy
    ) -> datetime | None:
        if state.blocked_until is not None and state.blocked_until > now:
            return state.blocked_until
        window = timedelta(seconds=policy.failure_window_seconds)
        recent = [moment for moment in _failure_times(state) if now - moment < window]
        if len(recent) < policy.max_failures:
            return None
        # Blocked from the failure that reached the threshold; those failures are used up.
        until = recent[-1] + timedelta(seconds=policy.block_seconds)
        state.blocked_until = until
        state.failures = {"at": []}
        return until if until > now else None

    async def _count_credits(
        self,
        session: AsyncSession,
        state: AbuseState,
        *,
        credits: int,
        now: datetime,
        policy: AbusePolicy,
    ) -> None:
        hour = timedelta(hours=1)
        if state.hour_started_at is None or now - state.hour_started_at >= hour:
            state.hour_started_at = now
            state.hour_credits = 0
            state.hour_flagged = False
        state.hour_credits += credits
        if state.hour_credits > policy.fraud_credits_per_hour and not state.hour_flagged:
            state.hour_flagged = True
            flag = FraudFlag(
                id=new_id("flag"),
                organization_id=state.organization_id,
                subject=state.subject,
                credits_in_window=state.hour_credits,
                threshold=policy.fraud_credits_per_hour,
                window_started_at=state.hour_started_at,
                created_at=now,
            )
            repository.add_fraud_flag(session, flag)
            await outbox.publish(
                session,
                "credits.fraud_flagged",
                {
                    "flag_id": flag.id,
                    "subject": flag.subject,
                    "credits_in_window": flag.credits_in_window,
                    "threshold": flag.threshold,
                    "window_started_at": flag.window_started_at.isoformat(),
                },
                organization_id=state.organization_id,
                occurred_at=now,
            )

    async def list_fraud_flags(
        self, session: AsyncSession, *, params: PageParams, organization_id: str | None = None
    ) -> PageResult[FraudFlag]:
        return await repository.list_fraud_flags(
            session, params=params, organization_id=organization_id
        )


abuse_service = AbuseService()
