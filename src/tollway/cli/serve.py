from __future__ import annotations

import asyncio
import os
import signal
import tempfile

import typer
import uvicorn

from tollway import migrations
from tollway.cli._context import load_settings, run_async
from tollway.kit.sweeps import SweepContext, Sweeper
from tollway.registry import load_domains


def serve(
    host: str | None = typer.Option(None, help="address to bind [TOLLWAY_HOST]"),
    port: int | None = typer.Option(None, help="port to bind [TOLLWAY_PORT]"),
    workers: int | None = typer.Option(None, help="worker processes [TOLLWAY_WORKERS]"),
) -> None:
    """Serve the HTTP API (migrating the database first)."""
    settings = load_settings(host=host, port=port, workers=workers)
    if settings.migrate_on_start:
        migrations.upgrade(settings)
        # Migrated once here; the worker processes must not race to do it again.
        os.environ["TOLLWAY_MIGRATE_ON_START"] = "false"
    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tollway-metrics-")
    typer.echo(f"Tollway on http://{settings.host}:{settings.port} (docs at /api/v1/docs)")
    uvicorn.run(
        "tollway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        server_header=False,
    )


def worker() -> None:
    """Run the background sweeps (renewals, expiries, deliveries) until stopped."""
    settings = load_settings()
    load_domains()

    async def _work(context: SweepContext) -> None:
        sweeper = Sweeper(context)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, sweeper.stop)
        await sweeper.run_forever()

    run_async(settings, _work, quiet_logs=False)
