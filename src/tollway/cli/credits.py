from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from tollway.cli._context import fail, load_settings, run_async

if TYPE_CHECKING:
    from tollway.kit.sweeps import SweepContext
    from tollway.ledger.models import CreditGrant

app = typer.Typer(help="Credits: grants by hand.", no_args_is_help=True)


@app.command("grant")
def grant(
    org: str = typer.Option(..., "--org", help="organization id (org_...)"),
    amount: int = typer.Option(..., "--amount", help="credits to grant (> 0)"),
    reason: str = typer.Option(..., "--reason", help="why; kept in the ledger and audit log"),
    expires_at: datetime | None = typer.Option(
        None, "--expires-at", help="ISO time (UTC if no offset) after which unspent credits lapse"
    ),
    source: str = typer.Option("admin", "--source", help="admin or promo"),
) -> None:
    """Grant credits to an organization, as a platform administrator would."""
    import structlog

    from tollway.errors import TollwayError
    from tollway.ledger.service.grants import grant_service

    settings = load_settings()
    if source not in ("admin", "promo"):
        typer.secho("--source must be admin or promo", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)

    async def _grant(context: SweepContext) -> CreditGrant:
        # The audit log names who granted: the operator at the console.
        structlog.contextvars.bind_contextvars(actor="cli")
        async with context.database.transaction() as session:
            return await grant_service.grant(
                session,
                organization_id=org,
                amount=amount,
                source=source,
                now=context.clock.now(),
                expires_at=expires_at,
                reason=reason,
                low_balance_threshold=context.settings.credits_low_balance_threshold,
            )

    try:
        created = run_async(settings, _grant)
    except TollwayError as error:
        fail(error)
    typer.echo(f"granted {created.amount} credits to {org}: {created.id}")
