"""``tollway catalog``: check and load catalogs, put organizations on plans, override limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from tollway.cli._context import fail, load_settings, run_async

if TYPE_CHECKING:
    from tollway.kit.sweeps import SweepContext
    from tollway.plans.catalog import Catalog

app = typer.Typer(help="The catalog: plans, features, meters, prices.", no_args_is_help=True)


def _summary(catalog: Catalog) -> str:
    plans = ", ".join(
        f"{plan.id} ({plan.price.money.format()}/{plan.price.interval})"
        for plan in catalog.plans.values()
    )
    return (
        f"{len(catalog.plans)} plans: {plans}; {len(catalog.features)} features, "
        f"{len(catalog.meters)} meters, {len(catalog.token_packs)} token packs, "
        f"{len(catalog.tax_rates)} tax rates"
    )


@app.command("check")
def check(file: Path = typer.Argument(..., help="catalog TOML file")) -> None:
    """Check a catalog file without loading it."""
    from tollway.errors import TollwayError
    from tollway.plans.catalog import load_catalog_file

    try:
        catalog = load_catalog_file(file)
    except TollwayError as error:
        fail(error)
    typer.echo(f"valid catalog: {_summary(catalog)}")


@app.command("load")
def load(file: Path = typer.Argument(..., help="catalog TOML file")) -> None:
    """Make a catalog file the active catalog of every running Tollway (within a second).

    Existing subscriptions keep the prices of the catalog version they started on.
    Point TOLLWAY_CATALOG_PATH at the same file so that a restart keeps it.
    """
    from tollway import migrations
    from tollway.errors import TollwayError
    from tollway.plans.catalog import load_catalog_file
    from tollway.plans.service.catalog import catalog_service

    settings = load_settings()
    migrations.upgrade(settings)
    try:
        catalog = load_catalog_file(file)
    except TollwayError as error:
        fail(error)

    source = str(file.resolve())

    async def _load(context: SweepContext) -> int:
        async with context.database.transaction() as session:
            return await catalog_service.store(
                session, catalog, source=source, now=context.clock.now()
            )

    version = run_async(settings, _load)
    typer.echo(f"catalog version {version} active: {_summary(catalog)}")


@app.command("assign")
def assign(
    organization_id: str = typer.Argument(..., help="org_..."),
    plan: str = typer.Argument(..., help="a plan id of the active catalog"),
    license_state: str = typer.Option("active", help="active, grace, restricted or canceled"),
) -> None:
    """Put an organization on a plan by hand (subscriptions normally do this)."""
    from tollway.errors import TollwayError
    from tollway.plans.service.assignments import plans_service
    from tollway.plans.service.catalog import catalog_service

    settings = load_settings()

    async def _assign(context: SweepContext) -> str:
        async with context.database.transaction() as session:
            await catalog_service.refresh(session, now=context.clock.now(), force=True)
            assignment = await plans_service.assign_plan(
                session,
                organization_id,
                plan,
                license_state=license_state,  # type: ignore[arg-type]  # checked by the service
                now=context.clock.now(),
            )
        return (
            f"{assignment.organization_id} is on {assignment.plan_id} ({assignment.license_state})"
        )

    try:
        typer.echo(run_async(settings, _assign))
    except TollwayError as error:
        fail(error)


@app.command("override")
def override(
    organization_id: str = typer.Argument(..., help="org_..."),
    overrides: str = typer.Argument(
        ...,
        help='JSON, e.g. \'{"features": {"api": {"quota": 5000000}}, '
        '"rate_limit_per_minute": 20000, "abuse": {"max_credits_per_request": 50}}\'; '
        "{} removes every override",
    ),
) -> None:
    """Set an organization's custom limits (replaces its previous overrides)."""
    from tollway.errors import TollwayError
    from tollway.plans.service.assignments import plans_service
    from tollway.plans.service.catalog import catalog_service

    settings = load_settings()
    try:
        document = json.loads(overrides)
    except json.JSONDecodeError as error:
        typer.secho(f"not JSON: {error}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from error
    if not isinstance(document, dict):
        typer.secho("overrides must be a JSON object", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)

    async def _override(context: SweepContext) -> str:
        async with context.database.transaction() as session:
            await catalog_service.refresh(session, now=context.clock.now(), force=True)
            stored = await plans_service.set_overrides(
                session, organization_id, document, now=context.clock.now()
            )
        return f"{organization_id}: {json.dumps(stored, sort_keys=True)}"

    try:
        typer.echo(run_async(settings, _override))
    except TollwayError as error:
        fail(error)
