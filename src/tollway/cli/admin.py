from __future__ import annotations

import typer

from tollway import migrations
from tollway.accounts.service import account_service
from tollway.cli._context import load_settings, run_async
from tollway.errors import TollwayError
from tollway.kit.sweeps import SweepContext

app = typer.Typer(help="The operator's staff (platform admins).", no_args_is_help=True)


@app.command("create")
def create(
    email: str = typer.Option(..., help="the admin's email"),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, help="at least 10 characters"
    ),
) -> None:
    """Create a platform admin (or make an existing user one, keeping their password)."""
    settings = load_settings()
    migrations.upgrade(settings)

    async def _create(context: SweepContext) -> str:
        now = context.clock.now()
        async with context.database.transaction() as session:
            existing = await account_service.get_user_by_email(session, email)
            if existing is not None:
                await account_service.set_platform_admin(
                    session, user_id=existing.id, is_admin=True, now=now
                )
                return f"{existing.email} ({existing.id}) is now a platform admin"
            tenancy = await account_service.register(
                session, email=email, password=password, now=now, is_platform_admin=True
            )
            return f"created platform admin {tenancy.user.email} ({tenancy.user.id})"

    try:
        typer.echo(run_async(settings, _create))
    except TollwayError as error:
        typer.secho(f"{error.code}: {error.detail}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from error
