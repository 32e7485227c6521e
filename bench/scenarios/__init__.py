"""Benchmark scenarios. Each is a function ``(server, options) -> dict`` registered in
:data:`SCENARIOS`; ``health`` runs first and is every other scenario's baseline."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.load import LoadResult, Request, run_load
from bench.server import Server


@dataclass(frozen=True)
class Options:
    duration_s: int
    connections: int


Scenario = Callable[[Server, Options], dict[str, Any]]


def health(server: Server, options: Options) -> dict[str, Any]:
    """GET /api/v1/health: the framework's floor, the baseline for every ratio."""
    result: LoadResult = run_load(
        server.base_url,
        Request("GET", "/api/v1/health"),
        connections=options.connections,
        duration_s=options.duration_s,
    )
    return {"load": result.as_dict()}


SCENARIOS: dict[str, Scenario] = {"health": health}
