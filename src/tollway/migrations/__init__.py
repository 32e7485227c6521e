"""Alembic migrations, applied by ``tollway db upgrade`` and at start-up.

The scripts live inside the package (``tollway:migrations``) so an installed Tollway
can migrate its database without the source tree; ``alembic.ini`` at the repository
root points at the same place for ``alembic revision --autogenerate``.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from tollway.config import Settings

SCRIPT_LOCATION = "tollway:migrations"


#: Tables the models do not describe on purpose: the marketplace's search index (an
#: FTS5 virtual table and its shadow tables on SQLite, a tsvector table on PostgreSQL)
#: is created by its migration per dialect.
UNMODELLED_TABLE_PREFIX = "marketplace_search"


def include_name(name: str | None, type_: str, _parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: leave the unmodelled tables out of comparisons."""
    if type_ == "table" and name is not None:
        return not name.startswith(UNMODELLED_TABLE_PREFIX)
    return True


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` (runs its own event loop: call outside one)."""
    command.upgrade(alembic_config(settings), revision)


def script_heads() -> set[str]:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return set(ScriptDirectory.from_config(config).get_heads())


def current_heads(connection: Connection) -> set[str]:
    return set(MigrationContext.configure(connection).get_current_heads())


async def upgrade_with_engine(
    engine: AsyncEngine, settings: Settings, revision: str = "head"
) -> None:
    """Apply migrations on an existing engine from inside a running event loop."""

    def _upgrade(connection: Connection) -> None:
        config = alembic_config(settings)
        config.attributes["connection"] = connection
        command.upgrade(config, revision)

    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
