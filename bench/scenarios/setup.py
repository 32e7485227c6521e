"""Set-up helpers: scenarios create what they need through the public HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PASSWORD = "bench password that is long enough"  # noqa: S105 - a throwaway bench account


@dataclass(frozen=True)
class BenchAccount:
    organization_id: str
    access_token: str
    api_key: str


def new_account(base_url: str, *, scopes: list[str] | None = None) -> BenchAccount:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        registered = client.post(
            "/api/v1/auth/register",
            json={"email": f"bench-{uuid.uuid4().hex[:12]}@example.com", "password": PASSWORD},
        )
        registered.raise_for_status()
        body = registered.json()
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        payload: dict[str, object] = {"name": "bench"}
        if scopes is not None:
            payload["scopes"] = scopes
        key = client.post("/api/v1/auth/keys", json=payload, headers=headers)
        key.raise_for_status()
        return BenchAccount(
            organization_id=body["organization"]["id"],
            access_token=body["access_token"],
            api_key=key.json()["key"],
        )


def override_limits(
    database_url: str, data_dir: Path, organization_id: str, overrides: dict[str, Any]
) -> None:
    """Give the bench organization custom limits with ``tollway catalog override`` (as an
    operator would), then wait out the servers' one-second entitlements cache."""
    env = {**os.environ, "TOLLWAY_DATABASE_URL": database_url, "TOLLWAY_DATA_DIR": str(data_dir)}
    executable = Path(sys.executable).with_name("tollway")
    subprocess.run(
        [str(executable), "catalog", "override", organization_id, json.dumps(overrides)],
        env=env,
        check=True,
        capture_output=True,
    )
    time.sleep(1.1)


def new_dashboard_session(base_url: str) -> str:
    """A new account logged into a dashboard cookie session; answers the cookie value."""
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    with httpx.Client(base_url=base_url, timeout=30) as client:
        client.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD}
        ).raise_for_status()
        opened = client.post("/api/v1/auth/session", json={"email": email, "password": PASSWORD})
        opened.raise_for_status()
        return str(opened.cookies["tollway_session"])
