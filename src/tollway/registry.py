"""The list of domains: importing them registers their tables, sweeps and demo loaders.

``create_app`` includes each domain's router from here, and the CLI calls
:func:`load_domains` before running sweeps or demo loaders.
"""

from __future__ import annotations

import importlib

from fastapi import APIRouter

#: Domain packages in dependency order. A domain lists the modules that exist in it.
DOMAINS: dict[str, tuple[str, ...]] = {
    "tollway.observability": ("endpoints",),
    "tollway.audit": ("service",),
    "tollway.accounts": ("service", "endpoints", "tasks"),
    "tollway.auth": ("endpoints", "tasks"),
    "tollway.api_keys": ("endpoints",),
    "tollway.plans": ("endpoints",),
    "tollway.metering": ("endpoints",),
    "tollway.entitlements": ("endpoints",),
    "tollway.ledger": ("endpoints", "tasks"),
    "tollway.payments": ("service", "endpoints", "tasks"),
    "tollway.billing": ("service", "endpoints", "tasks"),
    "tollway.license": ("endpoints",),
    "tollway.marketplace": ("service", "endpoints", "admin_endpoints", "demo"),
    "tollway.testclock": ("endpoints",),
}


def load_domains() -> list[APIRouter]:
    """Import every domain module; return the routers to mount, in order."""
    routers: list[APIRouter] = []
    for package, modules in DOMAINS.items():
        for module_name in modules:
            module = importlib.import_module(f"{package}.{module_name}")
            router = getattr(module, "router", None)
            # ``endpoints``, and ``admin_endpoints`` for a domain's routes under /admin.
            if module_name.endswith("endpoints") and isinstance(router, APIRouter):
                routers.append(router)
    importlib.import_module("tollway.kit.idempotency")
    return routers
