"""``tollway serve`` as an operator runs it: a real server process on loopback."""

import os
import signal
from pathlib import Path

import httpx
import pytest

from tests.fixtures.servers import (
    alive,
    children_of,
    port_is_free,
    serving,
    start,
    stop,
    wait_for,
)

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads processes from /proc")


def failed_logins(url: str, forwarded_for: list[str]) -> list[int]:
    with httpx.Client(base_url=url, timeout=10) as http:
        return [
            http.post(
                "/api/v1/auth/login",
                json={"email": f"guess{number}@example.com", "password": "wrong password!"},
                headers={"X-Forwarded-For": address},
            ).status_code
            for number, address in enumerate(forwarded_for)
        ]


class TestForwardedHeaders:
    def test_x_forwarded_for_from_an_untrusted_peer_does_not_change_the_throttled_address(
        self, tmp_path: Path
    ) -> None:
        with serving(tmp_path) as served:
            statuses = failed_logins(served.url, [f"198.51.100.{n}" for n in range(6)])
        assert statuses == [401] * 5 + [429]

    def test_a_trusted_proxy_names_the_client_it_forwards(self, tmp_path: Path) -> None:
        with serving(tmp_path, trusted_proxies="127.0.0.1") as served:
            statuses = failed_logins(served.url, ["203.0.113.9"] * 6 + ["203.0.113.10"])
        assert statuses == [401] * 5 + [429, 401]


class TestWorkers:
    def test_workers_exit_when_their_parent_is_killed_and_a_restart_binds(
        self, tmp_path: Path
    ) -> None:
        served = start(tmp_path, "--workers", "2")
        workers: set[int] = set()
        try:
            assert wait_for(lambda: len(children_of(served.process.pid)) >= 2, timeout=30)
            workers = children_of(served.process.pid)
            os.kill(served.process.pid, signal.SIGKILL)
            served.process.wait()
            assert wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30)
            assert wait_for(lambda: port_is_free(served.port), timeout=10)
        finally:
            for pid in workers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            stop(served)
        restarted = start(tmp_path, "--workers", "2", port=served.port)
        try:
            assert httpx.get(f"{restarted.url}/api/v1/health", timeout=5).status_code == 200
        finally:
            stop(restarted)
