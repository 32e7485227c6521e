"""Each organization's plan, license state and overrides."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from tollway.audit.service import audit_service
from tollway.db import TollwaySession
from tollway.kit.cache import TTLCache
from tollway.kit.clock import utcnow
from tollway.kit.outbox import outbox
from tollway.plans.catalog import AbuseLimits, Plan, PlanFeature
from tollway.plans.errors import InvalidLicenseState, InvalidOverride, OrganizationNotFound
from tollway.plans.repository import PlansRepository
from tollway.plans.service.catalog import catalog_service

log = structlog.get_logger("tollway.plans")

LicenseState = Literal["active", "grace", "restricted", "canceled"]
LICENSE_STATES: tuple[LicenseState, ...] = ("active", "grace", "restricted", "canceled")


@dataclass(frozen=True, slots=True)
class PlanAssignment:
    organization_id: str
    plan_id: str
    license_state: LicenseState
    grace_ends_at: datetime | None = None
    catalog_version: int | None = None


@dataclass(frozen=True, slots=True)
class EffectivePlan:
    """A plan after an organization's overrides: what it may do, feature by feature."""

    plan: Plan
    features: dict[str, PlanFeature]
    rate_limit_per_minute: int | None
    #: The abuse battery's thresholds: the plan's, with the organization's ``abuse`` override.
    abuse: AbuseLimits


# -- invalidation hooks: caches in this process forget an organization on commit ---------

_CHANGED = "tollway.plans.changed_organizations"
_listeners: list[weakref.WeakMethod[Callable[[str], None]]] = []


def on_plan_change(listener: Callable[[str], None]) -> None:
    """Call the bound method ``listener(organization_id)`` after a transaction that
    changed that organization's plan or overrides commits (held weakly: a cache that
    is gone stops listening)."""
    _listeners.append(weakref.WeakMethod(listener))


@event.listens_for(TollwaySession, "after_commit")
def _after_commit(session: Session) -> None:
    changed: set[str] | None = session.info.pop(_CHANGED, None)
    if not changed:
        return
    alive = [reference for reference in _listeners if reference() is not None]
    _listeners[:] = alive
    for reference in alive:
        listener = reference()
        if listener is not None:
            for organization_id in changed:
                listener(organization_id)


@event.listens_for(TollwaySession, "after_rollback")
def _after_rollback(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def _mark_changed(session: AsyncSession, organization_id: str) -> None:
    session.sync_session.info.setdefault(_CHANGED, set()).add(organization_id)


class PlansService:
    def __init__(self) -> None:
        #: The ledger asks for abuse limits on every reservation: read at most once a
        #: second per organization, and forgotten here when a change commits.
        self._abuse_limits: TTLCache[str, AbuseLimits] = TTLCache()
        #: ``/auth/me`` names the plan on every call: the same once-a-second reading.
        self._plan_ids: TTLCache[str, str] = TTLCache()
        on_plan_change(self._forget)

    def _forget(self, organization_id: str) -> None:
        self._abuse_limits.discard(organization_id)
        self._plan_ids.discard(organization_id)

    async def plan_id(self, session: AsyncSession, organization_id: str, *, now: datetime) -> str:
        """The organization's plan id, read at most once a second per process (every
        process sees a change within a second, the one that made it at once)."""

        async def load() -> str:
            return (await self.plan_of(session, organization_id)).plan_id

        return await self._plan_ids.get_or_load(organization_id, now=now, load=load)

    async def plan_of(self, session: AsyncSession, organization_id: str) -> PlanAssignment:
        """The organization's plan and license state; the default plan when none is set."""
        row = await PlansRepository(session).get_by_organization_id(organization_id)
        if row is None:
            return PlanAssignment(
                organization_id=organization_id,
                plan_id=catalog_service.catalog.default_plan,
                license_state="active",
            )
        return _assignment(row.organization_id, row.plan_id, row)

    async def assign_plan(
        self,
        session: AsyncSession,
        organization_id: str,
        plan_id: str,
        *,
        license_state: LicenseState = "active",
        grace_ends_at: datetime | None = None,
        catalog_version: int | None = None,
        now: datetime | None = None,
    ) -> PlanAssignment:
        """Put an organization on a plan, with its license state (billing's entry point).

        Setting the same values again changes nothing and records nothing (handlers
        set state, they never toggle). Caches in every process see the change within
        a second; this process at once, when the transaction commits.
        """
        catalog_service.get_plan(plan_id)
        if license_state not in LICENSE_STATES:
            raise InvalidLicenseState(
                f"license_state must be one of {', '.join(LICENSE_STATES)}",
                license_state=license_state,
            )
        repository = PlansRepository(session)
        before = await repository.get_by_organization_id(organization_id)
        previous = (
            (before.plan_id, before.license_state, before.grace_ends_at, before.catalog_version)
            if before is not None
            else None
        )
        wanted = (plan_id, license_state, grace_ends_at, catalog_version)
        if previous == wanted:
            return PlanAssignment(
                organization_id, plan_id, license_state, grace_ends_at, catalog_version
            )
        moment = now or utcnow()
        stored = await repository.upsert_assignment(
            {
                "organization_id": organization_id,
                "plan_id": plan_id,
                "license_state": license_state,
                "grace_ends_at": grace_ends_at,
                "catalog_version": catalog_version,
                "updated_at": moment,
            }
        )
        if not stored:
            raise OrganizationNotFound(f"there is no organization {organization_id!r}")
        details = {
            "plan": plan_id,
            "license_state": license_state,
            "grace_ends_at": grace_ends_at.isoformat() if grace_ends_at else None,
            "previous_plan": previous[0] if previous else None,
            "previous_license_state": previous[1] if previous else None,
        }
        audit_service.record(
            session,
            action="plan.assigned",
            target=f"organization:{organization_id}",
            organization_id=organization_id,
            details=details,
            occurred_at=moment,
        )
        await outbox.publish(
            session,
            "organization.plan_changed",
            {"organization_id": organization_id, **details},
            organization_id=organization_id,
            occurred_at=moment,
        )
        _mark_changed(session, organization_id)
        return PlanAssignment(
            organization_id, plan_id, license_state, grace_ends_at, catalog_version
        )

    async def get_overrides(self, session: AsyncSession, organization_id: str) -> dict[str, Any]:
        row = await PlansRepository(session).get_overrides(organization_id)
        return dict(row.overrides) if row is not None else {}

    async def set_overrides(
        self,
        session: AsyncSession,
        organization_id: str,
        overrides: dict[str, Any],
        *,
        now: datetime,
    ) -> dict[str, Any]:
        """Replace an organization's custom limits (an empty document removes them)."""
        check_overrides(overrides)
        if not await PlansRepository(session).upsert_overrides(
            organization_id=organization_id, overrides=overrides, now=now
        ):
            raise OrganizationNotFound(f"there is no organization {organization_id!r}")
        audit_service.record(
            session,
            action="plan.overrides_set",
            target=f"organization:{organization_id}",
            organization_id=organization_id,
            details={"overrides": overrides},
            occurred_at=now,
        )
        _mark_changed(session, organization_id)
        return overrides

    async def effective_plan(
        self, session: AsyncSession, organization_id: str
    ) -> tuple[PlanAssignment, EffectivePlan]:
        """The organization's assignment and its plan with overrides applied (one query)."""
        row, override_row = await PlansRepository(session).get_plan_and_overrides(organization_id)
        if row is None:
            assignment = PlanAssignment(
                organization_id=organization_id,
                plan_id=catalog_service.catalog.default_plan,
                license_state="active",
            )
        else:
            assignment = _assignment(organization_id, row.plan_id, row)
        plan = catalog_service.catalog.plans.get(assignment.plan_id)
        if plan is None:
            # The catalog dropped the plan this organization is on: fall back to the
            # default rather than lock the customer out; billing migrates them.
            log.warning("plans.unknown_assigned_plan", organization_id=organization_id)
            plan = catalog_service.default_plan()
        overrides = override_row.overrides if override_row is not None else {}
        return assignment, apply_overrides(plan, overrides)

    async def abuse_limits(
        self, session: AsyncSession, organization_id: str, *, now: datetime
    ) -> AbuseLimits:
        """The abuse battery's thresholds for an organization: its plan's
        (``[plans.<id>.abuse]``) with its ``abuse`` override applied. Cached for a
        second, like the entitlements: every process sees a change within a second,
        the one that made it at once."""

        async def load() -> AbuseLimits:
            _, effective = await self.effective_plan(session, organization_id)
            return effective.abuse

        return await self._abuse_limits.get_or_load(organization_id, now=now, load=load)


def _assignment(organization_id: str, plan_id: str, row: Any) -> PlanAssignment:
    return PlanAssignment(
        organization_id=organization_id,
        plan_id=plan_id,
        license_state=row.license_state,
        grace_ends_at=row.grace_ends_at,
        catalog_version=row.catalog_version,
    )


_FEATURE_OVERRIDE_KEYS = frozenset({"enabled", "quota", "enforcement", "rate_limit_per_minute"})
_ABUSE_OVERRIDE_KEYS = frozenset(AbuseLimits.__slots__)


def check_overrides(overrides: dict[str, Any]) -> None:
    """Refuse overrides that name unknown features or carry values of the wrong kind."""
    unknown_keys = set(overrides) - {"features", "rate_limit_per_minute", "abuse"}
    if unknown_keys:
        raise InvalidOverride(f"unknown override keys: {', '.join(sorted(unknown_keys))}")
    abuse = overrides.get("abuse", {})
    if not isinstance(abuse, dict) or set(abuse) - _ABUSE_OVERRIDE_KEYS:
        raise InvalidOverride(f"abuse takes {', '.join(sorted(_ABUSE_OVERRIDE_KEYS))}")
    for name, value in abuse.items():
        if not _is_int(value) or value < 0:
            raise InvalidOverride(f"abuse.{name} must be a non-negative integer")
    limit = overrides.get("rate_limit_per_minute")
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise InvalidOverride("rate_limit_per_minute must be a positive integer or null")
    features = overrides.get("features", {})
    if not isinstance(features, dict):
        raise InvalidOverride("features must be an object")
    for feature_id, body in features.items():
        feature = catalog_service.get_feature(feature_id)
        if not isinstance(body, dict) or set(body) - _FEATURE_OVERRIDE_KEYS:
            raise InvalidOverride(
                f"features.{feature_id} takes {', '.join(sorted(_FEATURE_OVERRIDE_KEYS))}"
            )
        if "enabled" in body and not isinstance(body["enabled"], bool):
            raise InvalidOverride(f"features.{feature_id}.enabled must be true or false")
        quota = body.get("quota")
        if quota is not None and (not _is_int(quota) or quota < 0 or feature.meter is None):
            raise InvalidOverride(
                f"features.{feature_id}.quota must be a non-negative integer on a metered feature"
            )
        if body.get("enforcement", "hard") not in ("hard", "soft"):
            raise InvalidOverride(f"features.{feature_id}.enforcement must be hard or soft")
        rate = body.get("rate_limit_per_minute")
        if rate is not None and (not _is_int(rate) or rate < 1):
            raise InvalidOverride(f"features.{feature_id}.rate_limit_per_minute must be positive")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def apply_overrides(plan: Plan, overrides: dict[str, Any]) -> EffectivePlan:
    features = dict(plan.features)
    for feature_id, body in (overrides.get("features") or {}).items():
        if feature_id not in catalog_service.catalog.features:
            continue  # the catalog dropped it since the override was written
        if body.get("enabled") is False:
            features.pop(feature_id, None)
            continue
        base = features.get(feature_id, PlanFeature(feature=feature_id))
        changes: dict[str, Any] = {
            key: body[key]
            for key in ("quota", "enforcement", "rate_limit_per_minute")
            if key in body
        }
        features[feature_id] = replace(base, **changes)
    rate_limit = overrides.get("rate_limit_per_minute", plan.rate_limit_per_minute)
    abuse = {
        name: value
        for name, value in (overrides.get("abuse") or {}).items()
        if name in _ABUSE_OVERRIDE_KEYS
    }
    return EffectivePlan(
        plan=plan,
        features=features,
        rate_limit_per_minute=rate_limit,
        abuse=replace(plan.abuse, **abuse) if abuse else plan.abuse,
    )


plans_service = PlansService()
