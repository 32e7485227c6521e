"""The decision and metering scenarios: ``authorize`` and ``usage_batch``."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench.load import Request, run_load
from bench.scenarios.setup import new_account, override_limits
from bench.server import Server

#: The bench organization's ``sync`` quota: large enough never to run out, so every
#: decision does the full work (quota check + usage event), none is a cheap denial.
BIG_QUOTA = 1_000_000_000
BATCH_SIZE = 1000
BATCH_CONNECTIONS = 4


def authorize(server: Server, options: Any) -> dict[str, Any]:
    """POST /api/v1/authorize: valid key, allowed feature, quota check and usage record,
    no credits; every answer waits for its (group) commit."""
    account = new_account(server.base_url)
    override_limits(
        server.database_url,
        server.data_dir,
        account.organization_id,
        {"features": {"sync": {"quota": BIG_QUOTA}}},
    )
    result = run_load(
        server.base_url,
        Request(
            "POST",
            "/api/v1/authorize",
            headers={
                "Authorization": f"Bearer {account.api_key}",
                "Content-Type": "application/json",
            },
            body=json.dumps({"feature": "sync", "quantity": 1}),
        ),
        connections=options.connections,
        duration_s=options.duration_s,
    )
    return {
        "load": result.as_dict(),
        "goal": {"ratio_to_baseline": ">= 0.40 (SQLite)", "p99_ms": "<= 25"},
    }


def usage_batch(server: Server, options: Any) -> dict[str, Any]:
    """POST /api/v1/billing/usage with batches of 1,000 fresh events: events/s, every
    event committed before its answer."""
    account = new_account(server.base_url)
    override_limits(
        server.database_url,
        server.data_dir,
        account.organization_id,
        {"features": {"sync": {"quota": None}}},
    )
    spec = {
        "url": f"{server.base_url}/api/v1/billing/usage",
        "headers": {"Authorization": f"Bearer {account.api_key}"},
        "connections": BATCH_CONNECTIONS,
        "duration_s": options.duration_s,
        "batch_size": BATCH_SIZE,
    }
    output = subprocess.run(
        [sys.executable, "-m", "bench.usage_load"],
        input=json.dumps(spec),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    load = json.loads(output)
    return {"load": load, "goal": {"events_per_s": ">= 20000 (SQLite)"}}
