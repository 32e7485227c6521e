"""Migrations: one head, reversible, and describing exactly the models."""

import asyncio
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

from tollway import migrations
from tollway.config import Settings
from tollway.db import create_engine
from tollway.models import metadata


def _diff(settings: Settings) -> list[object]:
    async def _compare() -> list[object]:
        engine = create_engine(settings)
        try:
            async with engine.connect() as connection:

                def compare(sync_connection: Connection) -> list[object]:
                    context = MigrationContext.configure(
                        sync_connection,
                        opts={"compare_type": True, "include_name": migrations.include_name},
                    )
                    return list(compare_metadata(context, metadata))

                return await connection.run_sync(compare)
        finally:
            await engine.dispose()

    return asyncio.run(_compare())


class TestMigrations:
    def test_there_is_exactly_one_head(self) -> None:
        assert len(migrations.script_heads()) == 1

    def test_migrations_build_exactly_the_schema_the_models_describe(self, tmp_path: Path) -> None:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'm.db'}", env="test")
        migrations.upgrade(settings)
        assert _diff(settings) == []

    def test_every_migration_can_be_undone_and_redone(self, tmp_path: Path) -> None:
        settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}", env="test")
        config = migrations.alembic_config(settings)
        command.upgrade(config, "head")
        command.downgrade(config, "base")
        command.upgrade(config, "head")
        assert _diff(settings) == []
