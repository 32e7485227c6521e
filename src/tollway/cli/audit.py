from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tollway.cli._context import load_settings, run_async

if TYPE_CHECKING:
    from tollway.audit.service import ChainReport
    from tollway.kit.sweeps import SweepContext

app = typer.Typer(help="The tamper-evident audit log.", no_args_is_help=True)


@app.command("verify")
def verify() -> None:
    """Recompute the audit chain; exit 1 at the first row that does not match."""
    from tollway.audit.service import audit_service

    settings = load_settings()

    async def _verify(context: SweepContext) -> ChainReport:
        async with context.database.transaction(write=False) as session:
            return await audit_service.verify(session)

    report = run_async(settings, _verify)
    if report.ok:
        typer.echo(f"audit chain intact: {report.entries} entries")
        return
    where = f" at seq {report.broken_at_seq}" if report.broken_at_seq is not None else ""
    typer.secho(f"audit chain broken{where}: {report.reason}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)
