"""What every command needs: settings with secrets, a database, the clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import typer

from tollway.config import Settings, check_payment_provider, ensure_secrets
from tollway.db import Database
from tollway.errors import ConfigurationError
from tollway.kit.clock import SystemClock
from tollway.kit.sweeps import SweepContext
from tollway.observability.logging import configure_logging

T = TypeVar("T")


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
        settings = ensure_secrets(settings)
        check_payment_provider(settings)
        return settings
    except (ConfigurationError, ValueError) as error:
        typer.secho(f"configuration error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from error


@asynccontextmanager
async def sweep_context(settings: Settings) -> AsyncIterator[SweepContext]:
    database = Database(settings)
    try:
        yield SweepContext(database=database, clock=SystemClock(), settings=settings)
    finally:
        await database.dispose()


def run_async(
    settings: Settings, work: Callable[[SweepContext], Awaitable[T]], *, quiet_logs: bool = True
) -> T:
    """Run ``work`` against a fresh database connection in its own event loop."""
    configure_logging(level="warning" if quiet_logs else settings.log_level, json=settings.log_json)

    async def _main() -> T:
        async with sweep_context(settings) as context:
            return await work(context)

    coroutine: Coroutine[Any, Any, T] = _main()
    return asyncio.run(coroutine)
