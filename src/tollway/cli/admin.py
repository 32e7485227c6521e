from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tollway.cli._context import fail, load_settings, run_async

if TYPE_CHECKING:
    from tollway.kit.sweeps import SweepContext

app = typer.Typer(help="The operator's staff (platform admins).", no_args_is_help=True)


@app.command("create")
def create(
    email: str = typer.Option(..., help="the admin's email"),
    password: str = typer.Option(
        ..., prompt=True, hide_input=True, confirmation_prompt=True, help="at least 10 characters"
    ),
) -> None:
    """Create a platform admin (or make an existing user one, keeping their password).

    The grant is audited as user.platform_admin_changed, by the actor cli."""
    import structlog

    from tollway import migrations
    from tollway.accounts.service.records import valid_email
    from tollway.accounts.service.users import user_service
    from tollway.errors import TollwayError

    try:
        # The login's own rule, before anything is touched.
        email = valid_email(email)
    except TollwayError as error:
        fail(error)
    settings = load_settings()
    migrations.upgrade(settings)

    async def _create(context: SweepContext) -> str:
        structlog.contextvars.bind_contextvars(actor="cli")
        now = context.clock.now()
        async with context.database.transaction() as session:
            existing = await user_service.get_user_by_email(session, email)
            if existing is not None:
                await user_service.set_platform_admin(
                    session, user_id=existing.id, is_admin=True, now=now
                )
                return f"{existing.email} ({existing.id}) is now a platform admin"
            tenancy = await user_service.register(
                session, email=email, password=password, now=now, is_platform_admin=True
            )
            return f"created platform admin {tenancy.user.email} ({tenancy.user.id})"

    try:
        typer.echo(run_async(settings, _create))
    except TollwayError as error:
        fail(error)


@app.command("reset-2fa")
def reset_two_factor(email: str = typer.Option(..., help="the user's email")) -> None:
    """Turn two-factor authentication off for a user who lost their authenticator and
    recovery codes (audited as user.2fa_reset). Check who is asking first."""
    from tollway.accounts.service.users import user_service
    from tollway.auth.two_factor import two_factor_service
    from tollway.errors import TollwayError

    settings = load_settings()

    async def _reset(context: SweepContext) -> str:
        async with context.database.transaction() as session:
            user = await user_service.get_user_by_email(session, email)
            if user is None:
                raise TollwayError(f"no user with the email {email}", code="not_found")
            await two_factor_service.reset(session, user_id=user.id, now=context.clock.now())
            return f"two-factor authentication is off for {user.email} ({user.id})"

    try:
        typer.echo(run_async(settings, _reset))
    except TollwayError as error:
        fail(error)


@app.command("unlock-login")
def unlock_login(
    email: str | None = typer.Option(None, help="lift the lock of this account"),
    address: str | None = typer.Option(None, help="lift the lock of this client address"),
) -> None:
    """Lift a lock-out before it ends by itself: of logins (429 login_throttled), and of
    password-reset and email-verification requests (429 email_token_throttled)."""
    from tollway.auth.credentials import EMAIL_VERIFICATION, PASSWORD_RESET
    from tollway.auth.throttle import (
        account_key,
        address_key,
        login_throttle_service,
        scoped_key,
    )

    if email is None and address is None:
        typer.secho("give --email or --address", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    settings = load_settings()
    logins = ([account_key(email)] if email else []) + ([address_key(address)] if address else [])
    keys = logins + [
        scoped_key(scope, key) for scope in (PASSWORD_RESET, EMAIL_VERIFICATION) for key in logins
    ]

    async def _unlock(context: SweepContext) -> str:
        async with context.database.transaction() as session:
            cleared = await login_throttle_service.unlock(session, keys=keys)
        return f"cleared {cleared} login throttle(s)"

    typer.echo(run_async(settings, _unlock))
