from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from tollway.cli._context import load_settings, run_async

if TYPE_CHECKING:
    from tollway.kit.sweeps import SweepContext

app = typer.Typer(help="Database schema: apply and inspect migrations.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from tollway import migrations

    settings = load_settings()
    migrations.upgrade(settings, revision)
    typer.echo(f"database at {', '.join(sorted(migrations.script_heads()))}")


@app.command("current")
def current() -> None:
    """Show the revision the database is at, and whether it is the newest."""
    from tollway import migrations

    settings = load_settings()

    async def _current(context: SweepContext) -> set[str]:
        async with context.database.engine.connect() as connection:
            return await connection.run_sync(migrations.current_heads)

    heads = run_async(settings, _current)
    expected = migrations.script_heads()
    typer.echo(f"current: {', '.join(sorted(heads)) or '(empty database)'}")
    typer.echo(f"newest:  {', '.join(sorted(expected))}")
    if heads != expected:
        typer.secho("migrations pending: run `tollway db upgrade`", fg=typer.colors.YELLOW)
        raise typer.Exit(1)
