from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from fastapi import FastAPI

#: Set by ``serve --workers N`` for its worker processes: the supervisor's pid.
SUPERVISOR_PID_VARIABLE = "TOLLWAY_SUPERVISOR_PID"
#: Linux prctl(2) option: the signal a process gets when its parent dies.
PR_SET_PDEATHSIG = 1


def serve(
    host: str | None = typer.Option(None, help="address to bind [TOLLWAY_HOST]"),
    port: int | None = typer.Option(None, help="port to bind [TOLLWAY_PORT]"),
    workers: int | None = typer.Option(None, help="worker processes [TOLLWAY_WORKERS]"),
) -> None:
    """Serve the HTTP API (migrating the database first)."""
    import tempfile

    import uvicorn

    from tollway import migrations
    from tollway.cli._context import load_settings

    settings = load_settings(host=host, port=port, workers=workers)
    # The app is built again from the environment in the serving process(es): what the
    # options said must reach it (TOLLWAY_BASE_URL follows host and port).
    os.environ["TOLLWAY_HOST"] = settings.host
    os.environ["TOLLWAY_PORT"] = str(settings.port)
    if settings.migrate_on_start:
        migrations.upgrade(settings)
        # Migrated once here; the worker processes must not race to do it again.
        os.environ["TOLLWAY_MIGRATE_ON_START"] = "false"
    factory = "tollway.app:create_app"
    if settings.workers > 1:
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tollway-metrics-")
        os.environ[SUPERVISOR_PID_VARIABLE] = str(os.getpid())
        factory = "tollway.cli.serve:worker_app"
    typer.echo(f"Tollway on http://{settings.host}:{settings.port} (docs at /api/v1/docs)")
    uvicorn.run(
        factory,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        # The app believes X-Forwarded-* from TOLLWAY_TRUSTED_PROXIES only; uvicorn's own
        # handling would trust any local peer.
        proxy_headers=False,
        server_header=False,
        # A worker still importing the app on a busy node can miss uvicorn's 5 s ping;
        # uvicorn then kills and restarts it, over and over.
        timeout_worker_healthcheck=30,
    )


def worker_app() -> FastAPI:
    """The app of one ``serve --workers N`` process, which exits with its supervisor."""
    from tollway.app import create_app

    exit_with_parent(int(os.environ[SUPERVISOR_PID_VARIABLE]))
    return create_app()


def exit_with_parent(parent_pid: int) -> None:
    """Get SIGTERM (uvicorn's graceful stop) when the supervisor ``parent_pid`` dies.

    Without it a ``kill -9`` of the supervisor leaves its workers serving on the shared
    socket, and a restart fails with "address in use". Linux delivers the signal
    itself (``PR_SET_PDEATHSIG``); elsewhere a thread watches the parent pid.
    """
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        import threading
        import time

        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="tollway-parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:
        # The parent died before the signal was asked for.
        os.kill(os.getpid(), signal.SIGTERM)


def worker() -> None:
    """Run the background sweeps (renewals, expiries, deliveries) until stopped."""
    import asyncio
    import signal

    from tollway.cli._context import load_settings, run_async
    from tollway.kit.sweeps import SweepContext, Sweeper
    from tollway.registry import load_domains

    settings = load_settings()
    load_domains()

    async def _work(context: SweepContext) -> None:
        sweeper = Sweeper(context)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, sweeper.stop)
        await sweeper.run_forever()

    run_async(settings, _work, quiet_logs=False)
