"""What every command needs: settings with secrets, a database, the clock.

Commands import the application's modules inside their functions, not at the top of
their module: ``tollway --help`` (and a mistyped option) then loads only typer, and
each command loads only what it uses (``tests/cli/test_imports.py`` keeps it so).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from tollway.config import Settings
    from tollway.errors import TollwayError
    from tollway.kit.sweeps import SweepContext

T = TypeVar("T")


def load_settings(**overrides: Any) -> Settings:
    from tollway.config import Settings, check_payment_provider, ensure_secrets
    from tollway.errors import ConfigurationError

    try:
        settings = Settings(**{key: value for key, value in overrides.items() if value is not None})
        settings = ensure_secrets(settings)
        check_payment_provider(settings)
        return settings
    except (ConfigurationError, ValueError) as error:
        typer.secho(f"configuration error: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from error


def fail(error: TollwayError) -> NoReturn:
    """Exit 1 with the error's code and detail, as the API would answer them."""
    typer.secho(f"{error.code}: {error.detail}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1) from error


@asynccontextmanager
async def sweep_context(settings: Settings) -> AsyncIterator[SweepContext]:
    # Every table, so a command that loads one domain's models can still flush rows
    # whose foreign keys name another domain's tables (credit accounts -> organizations).
    import tollway.models  # noqa: F401
    from tollway.db import Database
    from tollway.kit.clock import SystemClock
    from tollway.kit.sweeps import SweepContext

    database = Database(settings)
    try:
        yield SweepContext(database=database, clock=SystemClock(), settings=settings)
    finally:
        await database.dispose()


def run_async(
    settings: Settings, work: Callable[[SweepContext], Awaitable[T]], *, quiet_logs: bool = True
) -> T:
    """Run ``work`` against a fresh database connection in its own event loop."""
    import asyncio

    from tollway.observability.logging import configure_logging

    configure_logging(level="warning" if quiet_logs else settings.log_level, json=settings.log_json)

    async def _main() -> T:
        async with sweep_context(settings) as context:
            return await work(context)

    return asyncio.run(_main())
