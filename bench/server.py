"""Start ``tollway serve`` in a subprocess on a fresh database, as a user would."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Server:
    base_url: str
    database_url: str
    data_dir: Path
    log_file: Path


@contextlib.contextmanager
def running_server(
    *, database_url: str | None = None, redis_url: str | None = None, workers: int = 1
) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="tollway-bench-") as tmp:
        directory = Path(tmp)
        port = free_port()
        database_url = database_url or f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        env = {
            **os.environ,
            "TOLLWAY_DATABASE_URL": database_url,
            "TOLLWAY_DATA_DIR": str(directory / "data"),
            "TOLLWAY_PORT": str(port),
            "TOLLWAY_WORKERS": str(workers),
        }
        if redis_url:
            env["TOLLWAY_REDIS_URL"] = redis_url
        log_file = directory / "server.log"
        executable = Path(sys.executable).with_name("tollway")
        with log_file.open("w") as log:
            process = subprocess.Popen(
                [str(executable), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_ready(base_url, process, log_file)
            yield Server(base_url, database_url, directory / "data", log_file)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_ready(base_url: str, process: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tollway serve exited:\n{log_file.read_text()[-3000:]}")
        try:
            if httpx.get(f"{base_url}/api/v1/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("tollway serve did not become ready within 60 s")
