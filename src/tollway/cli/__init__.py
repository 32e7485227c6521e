"""``tollway``: the operator's tool. Each command group lives in its own module.

The command modules import only typer at the top; each command imports what it uses
when it runs (see ``_context``), so ``tollway --help`` does not load the application.
"""

from __future__ import annotations

import typer

from tollway.cli import admin, audit, billing, catalog, credits, db, demo, serve

app = typer.Typer(
    name="tollway",
    help="Tollway: monetization for developer tools.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.command("worker")(serve.worker)
app.command("demo")(demo.demo)
app.add_typer(db.app, name="db")
app.add_typer(audit.app, name="audit")
app.add_typer(admin.app, name="admin")
app.add_typer(billing.app, name="billing")
app.add_typer(catalog.app, name="catalog")
app.add_typer(credits.app, name="credits")


def main() -> None:
    app()
