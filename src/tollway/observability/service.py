from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from tollway import migrations
from tollway.db import Database

log = structlog.get_logger("tollway.ready")


@dataclass(slots=True)
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return all(value in {"ok", "not_configured"} for value in self.checks.values())


class ReadinessService:
    async def check(self, database: Database, redis: Redis | None) -> Readiness:
        """Whether this process can serve: database reachable with migrations at head, Redis up."""
        readiness = Readiness()
        try:
            async with database.engine.connect() as connection:
                current = await connection.run_sync(migrations.current_heads)
            readiness.checks["database"] = "ok"
            readiness.checks["migrations"] = (
                "ok" if current == migrations.script_heads() else "pending"
            )
        except (SQLAlchemyError, OSError) as error:
            log.warning("ready.database_failed", error=str(error))
            readiness.checks["database"] = "unreachable"
            readiness.checks["migrations"] = "unknown"
        if redis is None:
            readiness.checks["redis"] = "not_configured"
        else:
            try:
                await redis.ping()
                readiness.checks["redis"] = "ok"
            except (RedisError, OSError) as error:
                log.warning("ready.redis_failed", error=str(error))
                readiness.checks["redis"] = "unreachable"
        return readiness


readiness_service = ReadinessService()
