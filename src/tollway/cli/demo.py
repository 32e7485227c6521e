from __future__ import annotations

import typer

from tollway.cli._context import load_settings, run_async


def demo() -> None:
    """Load the demo catalog, accounts and packages (safe to run twice)."""
    from tollway import migrations
    from tollway.kit.demo import run_demo_loaders
    from tollway.registry import load_domains

    settings = load_settings()
    load_domains()
    migrations.upgrade(settings)
    results = run_async(settings, run_demo_loaders)
    if not results:
        typer.echo("no demo loaders are registered")
    for name, summary in results:
        typer.echo(f"{name}: {summary}")
