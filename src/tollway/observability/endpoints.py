from __future__ import annotations

from fastapi import Request
from pydantic import BaseModel
from starlette.responses import Response

from tollway.errors import ServiceUnavailable
from tollway.kit.routing import DatabaseDep, api_router
from tollway.observability.metrics import render_metrics
from tollway.observability.service import readiness_service

router = api_router(tags=["health"])


class HealthOut(BaseModel):
    status: str


class ReadyOut(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/api/v1/health", response_model=HealthOut)
async def health() -> HealthOut:
    """Liveness: answers 200 while the process runs, touching nothing else."""
    return HealthOut(status="ok")


@router.get(
    "/api/v1/ready",
    response_model=ReadyOut,
    responses={503: {"description": "a dependency is down or migrations are pending"}},
)
async def ready(request: Request, database: DatabaseDep) -> ReadyOut:
    """Readiness: 200 when the database answers with migrations at head and Redis (if
    configured) answers; otherwise 503 ``not_ready`` with the failing checks."""
    readiness = await readiness_service.check(database, request.app.state.redis)
    if not readiness.ready:
        raise ServiceUnavailable(
            "Tollway is not ready to serve", code="not_ready", checks=readiness.checks
        )
    return ReadyOut(status="ready", checks=readiness.checks)


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus text exposition of every Tollway metric."""
    body, content_type = render_metrics()
    return Response(content=body, media_type=content_type)
