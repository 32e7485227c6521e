"""``tollway billing run``: the billing sweeps, by hand (cron, a test clock, a catch-up)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from tollway.cli._context import load_settings, run_async

if TYPE_CHECKING:
    from tollway.kit.sweeps import SweepContext

app = typer.Typer(
    help="The billing engine: renewals, dunning, grace periods.", no_args_is_help=True
)


def _parse_until(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise typer.BadParameter(
            "use an ISO date or time, e.g. 2026-12-31 or 2026-12-31T12:00"
        ) from error
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@app.command("run")
def run(
    until: Annotated[
        str | None,
        typer.Option(
            help="sandbox only: move the test clock to this moment, billing what falls due"
        ),
    ] = None,
) -> None:
    """Run renewals, dunning retries, grace ends and provider events until nothing is due."""
    from tollway.billing.tasks import run_until_quiet
    from tollway.registry import load_domains
    from tollway.testclock.service import clock_service

    settings = load_settings()
    load_domains()
    target = _parse_until(until) if until else None
    if target is not None and settings.payment_provider != "sandbox":
        typer.secho(
            "--until moves the test clock: sandbox provider only", fg=typer.colors.RED, err=True
        )
        raise typer.Exit(2)

    async def _run(context: SweepContext) -> tuple[int, datetime]:
        await clock_service.restore(context.database, context.clock)
        if target is None:
            return await run_until_quiet(context), context.clock.now()
        if target < context.clock.now():
            raise typer.BadParameter(
                f"--until is before the clock's now ({context.clock.now():%Y-%m-%dT%H:%M:%S})"
            )
        result = await clock_service.advance_to(context, target)
        return result.handled, result.now

    handled, now = run_async(settings, _run)
    typer.echo(
        f"billing run: {handled} items handled; clock at {now.isoformat(timespec='seconds')}"
    )
