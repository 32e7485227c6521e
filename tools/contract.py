"""``make contract``: schemathesis against a real ``tollway serve`` on loopback.

Starts the server on a free port with a fresh SQLite file, registers a user (whose
access token is one credential) and creates an API key (the other), lifts the
organization's API rate limit so the run tests answers rather than 429s, then runs
schemathesis once per credential with the checks ``not_a_server_error``,
``status_code_conformance``, ``content_type_conformance`` and
``response_schema_conformance``, bounded in examples and time (the whole run stays
under about three minutes on two cores). Exit status: schemathesis's.

Operations that end the credential the run is using (logout, ending the dashboard
session or logins, revoking or rolling keys, changing the password) are left out:
the rest of the run would test only 401s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
from tests.fixtures.servers import TOLLWAY, environment, start, stop

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
    )
)
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
#: Operations that would end the credential under test (see the module docstring).
CREDENTIAL_ENDING = (
    r"^/api/v1/auth/(logout|session|logins/.*|password|keys/\{[^}]+\}/(revoke|roll))$"
)
MAX_EXAMPLES = os.environ.get("CONTRACT_MAX_EXAMPLES", "4")
MAX_SECONDS_PER_CREDENTIAL = os.environ.get("CONTRACT_MAX_SECONDS", "70")


def credentials(url: str, data_dir: Path) -> dict[str, str]:
    with httpx.Client(base_url=url, timeout=30) as http:
        registered = http.post(
            "/api/v1/auth/register",
            json={"email": "contract@example.com", "password": "a contract test pass"},
        )
        registered.raise_for_status()
        token = registered.json()["access_token"]
        organization_id = registered.json()["organization"]["id"]
        key = http.post(
            "/api/v1/auth/keys",
            json={"name": "contract"},
            headers={"Authorization": f"Bearer {token}"},
        )
        key.raise_for_status()
    subprocess.run(
        [
            str(TOLLWAY),
            "catalog",
            "override",
            organization_id,
            json.dumps({"rate_limit_per_minute": 1_000_000}),
        ],
        env=environment(data_dir),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return {"token": token, "api key": key.json()["key"]}


def run_schemathesis(url: str, name: str, credential: str) -> int:
    print(f"\n==> schemathesis with the {name}", flush=True)
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{url}/api/v1/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {credential}",
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        MAX_EXAMPLES,
        "--max-time",
        MAX_SECONDS_PER_CREDENTIAL,
        "--exclude-path-regex",
        CREDENTIAL_ENDING,
        "--seed",
        os.environ.get("CONTRACT_SEED", "14"),
        # The credential is the one given above, never a generated Authorization or cookie.
        "--generation-with-security-parameters",
        "false",
        "--no-color",
    ]
    return subprocess.run(command, check=False).returncode


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="tollway-contract-") as scratch:
        data_dir = Path(scratch)
        served = start(data_dir)
        try:
            failures = 0
            for name, credential in credentials(served.url, data_dir).items():
                failures += run_schemathesis(served.url, name, credential) != 0
            return 1 if failures else 0
        finally:
            stop(served)


if __name__ == "__main__":
    sys.exit(main())
