"""Benchmark scenarios. Each is a function ``(server, options) -> dict`` registered in
:data:`SCENARIOS`; ``health`` runs first and is every other scenario's baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.load import LoadResult, Request, run_load
from bench.scenarios.billing import billing_renewals
from bench.scenarios.entitlements import authorize, usage_batch
from bench.scenarios.setup import new_account, new_dashboard_session, override_limits
from bench.scenarios.webhooks import stripe_webhook_intake
from bench.server import Server


@dataclass(frozen=True)
class Options:
    duration_s: int
    connections: int


Scenario = Callable[[Server, Options], dict[str, Any]]


def health(server: Server, options: Options) -> dict[str, Any]:
    """GET /api/v1/health: the framework's floor, the baseline for every ratio."""
    result: LoadResult = run_load(
        server.base_url,
        Request("GET", "/api/v1/health"),
        connections=options.connections,
        duration_s=options.duration_s,
    )
    return {"load": result.as_dict()}


def auth_me(server: Server, options: Options) -> dict[str, Any]:
    """GET /api/v1/auth/me with an API key: authentication plus two primary-key reads,
    and (as every API-key call to Tollway's own API) one metered ``api_calls`` decision."""
    account = new_account(server.base_url)
    # Unlimited calls and no tier rate limit, so the run measures work, not refusals.
    override_limits(
        server.database_url,
        server.data_dir,
        account.organization_id,
        {"features": {"api": {"quota": None}}, "rate_limit_per_minute": None},
    )
    result = run_load(
        server.base_url,
        Request("GET", "/api/v1/auth/me", headers={"Authorization": f"Bearer {account.api_key}"}),
        connections=options.connections,
        duration_s=options.duration_s,
    )
    return {"load": result.as_dict(), "goal": {"ratio_to_baseline": ">= 0.60"}}


def auth_me_session(server: Server, options: Options) -> dict[str, Any]:
    """GET /api/v1/auth/me with a dashboard session cookie (the dashboard's every page)."""
    cookie = new_dashboard_session(server.base_url)
    result = run_load(
        server.base_url,
        Request("GET", "/api/v1/auth/me", headers={"Cookie": f"tollway_session={cookie}"}),
        connections=options.connections,
        duration_s=options.duration_s,
    )
    return {"load": result.as_dict()}


from bench.scenarios.credits import credits_reserve_commit  # noqa: E402 - needs Options above
from bench.scenarios.marketplace import (  # noqa: E402 - next to its sibling
    marketplace_resolve,
    marketplace_search,
)

SCENARIOS: dict[str, Scenario] = {
    "health": health,
    "auth_me": auth_me,
    "auth_me_session": auth_me_session,
    "authorize": authorize,
    "usage_batch": usage_batch,
    "credits_reserve_commit": credits_reserve_commit,
    "billing_renewals": billing_renewals,
    "stripe_webhook_intake": stripe_webhook_intake,
    "marketplace_search": marketplace_search,
    "marketplace_resolve": marketplace_resolve,
}
