"""The list of domains: importing them registers their tables, sweeps and demo loaders;
:func:`load_domains` then wires them to each other (:mod:`tollway.wiring`).

``create_app`` includes each domain's router from here, and the CLI calls
:func:`load_domains` before running sweeps or demo loaders.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

from tollway.wiring import wire

#: Domain packages in dependency order. A domain lists the modules that exist in it.
DOMAINS: dict[str, tuple[str, ...]] = {
    "tollway.observability": ("endpoints",),
    "tollway.audit": ("service",),
    "tollway.accounts": (
        "service.users",
        "service.organizations",
        "service.members",
        "endpoints",
        "tasks",
    ),
    "tollway.auth": (
        "endpoints",
        "logins_endpoints",
        "password_endpoints",
        "two_factor_endpoints",
        "oauth_endpoints",
        "tasks",
    ),
    "tollway.api_keys": ("endpoints",),
    "tollway.plans": ("endpoints",),
    "tollway.metering": ("endpoints",),
    "tollway.entitlements": ("endpoints",),
    "tollway.ledger": ("endpoints", "tasks"),
    "tollway.payments": ("webhooks.handlers", "endpoints", "tasks"),
    "tollway.billing": ("service", "endpoints", "tasks"),
    "tollway.license": ("endpoints",),
    "tollway.marketplace": ("service", "endpoints", "admin_endpoints", "demo"),
    "tollway.testclock": ("endpoints",),
}


#: Mounted first: the hot path's routes. Starlette tries routes in order, and a request
#: to ``/authorize`` or ``/billing/usage`` otherwise matched against every route before
#: it (measured: a tenth of an authorize's CPU). Their paths overlap no other route.
HOT_PATH_DOMAINS: tuple[str, ...] = ("tollway.entitlements", "tollway.metering")


def load_domains() -> list[APIRouter]:
    """Import every domain module in order; return the routers to mount, hot path first."""
    hot: list[APIRouter] = []
    rest: list[APIRouter] = []
    for package, modules in DOMAINS.items():
        for module_name in modules:
            module = importlib.import_module(f"{package}.{module_name}")
            router = getattr(module, "router", None)
            # ``endpoints``, and ``admin_endpoints`` for a domain's routes under /admin.
            if module_name.endswith("endpoints") and isinstance(router, APIRouter):
                (hot if package in HOT_PATH_DOMAINS else rest).append(router)
    importlib.import_module("tollway.kit.idempotency")
    wire()
    return hot + rest
