"""``marketplace_search`` and ``marketplace_resolve``: latency of search over 100,000
packages and of resolving a 200-package graph.

Set-up writes the catalogue straight into the server's database (an import, as an
operator migrating a registry would; publishing 100,000 packages through HTTP would
bench the upload path instead): packages with generated names, keywords and
descriptions, their search documents, and for resolution a layered graph of 200
packages with three versions each. Then one client sends requests one at a time (so
the figures are latency, not queueing) and reports percentiles.

Goals: search p95 <= 30 ms, resolve p95 <= 100 ms (on SQLite and on PostgreSQL).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, insert, select, text

from bench.server import Server
from tollway.config import Settings
from tollway.db import Database
from tollway.kit.ids import new_ids
from tollway.marketplace.models import Package, PackageVersion
from tollway.marketplace.search import (
    POSTGRES_INSERT,
    document_key,
    sqlite_document,
)

SEARCH_PACKAGES = 100_000
GRAPH_PACKAGES = 200
#: Layer sizes of the resolution graph: each package depends on 2-3 of the next layer.
GRAPH_LAYERS = (1, 4, 15, 30, 50, 100)
SAMPLES = 400
CHUNK = 5000

TECH = [
    "fastapi",
    "flask",
    "django",
    "react",
    "nextjs",
    "vue",
    "svelte",
    "rust",
    "go",
    "node",
    "express",
    "rails",
    "laravel",
    "spring",
    "kotlin",
    "swift",
    "flutter",
    "terraform",
    "kubernetes",
    "helm",
    "docker",
    "ansible",
    "pytorch",
    "pandas",
    "dbt",
    "airflow",
    "graphql",
    "grpc",
    "postgres",
    "redis",
    "kafka",
    "stripe",
    "auth",
    "llm",
    "rag",
]
KIND = [
    "starter",
    "crud",
    "api",
    "dashboard",
    "cli",
    "service",
    "worker",
    "pipeline",
    "admin",
    "saas",
    "blog",
    "shop",
    "docs",
    "sdk",
    "plugin",
    "bot",
    "agent",
    "monorepo",
    "template",
]
WORDS = [
    "template",
    "project",
    "tests",
    "ci",
    "docker",
    "deploy",
    "auth",
    "login",
    "users",
    "billing",
    "api",
    "rest",
    "graphql",
    "database",
    "migrations",
    "cache",
    "queue",
    "worker",
    "metrics",
    "tracing",
    "logging",
    "config",
    "settings",
    "admin",
    "dashboard",
    "charts",
    "tables",
    "forms",
    "validation",
    "pagination",
    "search",
    "upload",
    "storage",
    "email",
    "notifications",
    "webhooks",
    "payments",
    "subscriptions",
    "tenants",
    "roles",
    "permissions",
    "oauth",
    "jwt",
    "sessions",
    "security",
    "scanning",
    "linting",
    "formatting",
    "typing",
    "release",
    "packaging",
    "monitoring",
    "alerts",
    "backup",
    "restore",
    "kubernetes",
    "terraform",
    "cloud",
    "serverless",
    "functions",
    "edge",
    "cdn",
    "frontend",
    "backend",
    "fullstack",
    "mobile",
    "desktop",
    "embedded",
    "realtime",
    "websocket",
    "streaming",
    "batch",
]
CATEGORIES = ["web", "cli", "data", "devops", "ai", "mobile", "frontend", "docs"]
LICENSES = ["MIT", "Apache-2.0", "BSD-3-Clause", "MPL-2.0", "MIT OR Apache-2.0"]

QUERIES: list[dict[str, Any]] = [
    {"query": "fastapi crud"},
    {"query": "react dashboard", "sort": "downloads"},
    {"query": "kubernetes"},
    {"query": "stripe saas billing"},
    {"query": "djan"},
    {"query": "flask-login"},
    {"query": "c++"},
    {"query": "llm agent", "category": "ai"},
    {"query": "terraform", "min_quality": 60},
    {"query": "graphql api", "license": "MIT"},
    {"query": "rust cli", "sort": "recent"},
    {"query": "postgres migrations", "page": 3},
    {"category": "web", "sort": "downloads"},
    {"sort": "recent"},
    {"query": "fastapi-crud-17"},
    {"query": "a AND NOT b"},
]


def _settings(server: Server) -> Settings:
    return Settings(database_url=server.database_url, data_dir=server.data_dir, env="test")


def _package_rows(
    count: int, prefix: str, rng: random.Random, *, offset: int = 0
) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    ids = new_ids("pkg", count)
    rows = []
    for index, package_id in enumerate(ids):
        tech, kind = rng.choice(TECH), rng.choice(KIND)
        words = rng.sample(WORDS, 12)
        rows.append(
            {
                "id": package_id,
                "name": f"{prefix}{tech}-{kind}-{offset + index}",
                "description": f"A {tech} {kind} with " + " ".join(words) + ".",
                "category": rng.choice(CATEGORIES),
                "keywords": [tech, kind, *rng.sample(WORDS, 2)],
                "license": rng.choice(LICENSES),
                "price_minor": 0,
                "currency": None,
                "organization_id": "org_bench",
                "author_name": f"Bench Author {index % 50}",
                "quality_score": rng.randint(20, 100),
                "downloads": int(rng.paretovariate(1.2) * 10),
                "listed": True,
                "latest_version": "1.0.0",
                "latest_published_at": now - timedelta(minutes=rng.randint(0, 500_000)),
                "updated_at": now,
                "created_at": now,
            }
        )
    return rows


def _document(row: dict[str, Any]) -> dict[str, Any]:
    """The search index row of a package (as tollway.marketplace.search writes it)."""
    return {
        "id": row["id"],
        "name": row["name"].replace("-", " ") + " " + row["name"],
        "keywords": " ".join(row["keywords"]),
        "description": row["description"],
        "category": row["category"],
        "license_key": row["license"].lower(),
        "organization_id": row["organization_id"],
        "author_key": row["author_name"].lower(),
        "quality_score": row["quality_score"],
    }


async def _index(session: Any, rows: list[dict[str, Any]], dialect: str) -> None:
    documents = [_document(row) for row in rows]
    if dialect == "sqlite":
        await session.execute(
            text(
                "INSERT INTO marketplace_search (rowid, package_id, name, keywords,"
                " description, category, facets, license_key, organization_id, author_key,"
                " quality_score) VALUES (:key, :id, :name, :keywords, :description,"
                " :category, :facets, :license_key, :organization_id, :author_key,"
                " :quality_score)"
            ),
            [{"key": document_key(doc["id"]), **sqlite_document(doc)} for doc in documents],
        )
        return
    for doc in documents:
        doc["keywords"] += " " + doc["category"]
    await session.execute(
        text(POSTGRES_INSERT),
        documents,
    )


def _graph_versions(package_ids: dict[str, str], rng: random.Random) -> list[dict[str, Any]]:
    """Three versions per package; each depends on 2-3 packages of the next layer."""
    names = list(package_ids)
    layers: list[list[str]] = []
    start = 0
    for size in GRAPH_LAYERS:
        layers.append(names[start : start + size])
        start += size
    rows = []
    now = datetime.now(UTC)
    for depth, layer in enumerate(layers):
        below = layers[depth + 1] if depth + 1 < len(layers) else []
        for position, name in enumerate(layer):
            # Every package of the next layer has a parent here, plus random extra edges.
            chosen = {child for j, child in enumerate(below) if j % len(layer) == position}
            if below:
                chosen |= set(rng.sample(below, min(2, len(below))))
            for major_minor in ("1.0.0", "1.1.0", "2.0.0"):
                spec = "^1" if major_minor != "2.0.0" else ">=1"
                dependencies = [{"name": dep, "spec": spec} for dep in sorted(chosen)]
                digest = hashlib.sha256(f"{name}{major_minor}".encode()).hexdigest()
                rows.append(
                    {
                        "id": new_ids("pkv", 1)[0],
                        "package_id": package_ids[name],
                        "version": major_minor,
                        "state": "published",
                        "dependencies": dependencies,
                        "sha256": digest,
                        "size_bytes": 1,
                        "storage_key": f"sha256/{digest[:2]}/{digest}",
                        "signature": "bench",
                        "signature_kid": "bench",
                        "downloads": 0,
                        "published_at": now,
                        "created_at": now,
                    }
                )
    return rows


async def _seed(server: Server) -> None:
    database = Database(_settings(server))
    rng = random.Random(8)
    try:
        async with database.transaction() as session:
            present = (
                await session.execute(
                    select(func.count())
                    .select_from(Package)
                    .where(Package.organization_id == "org_bench")
                )
            ).scalar_one()
            if present:
                return
        for start in range(0, SEARCH_PACKAGES, CHUNK):
            rows = _package_rows(CHUNK, "", rng, offset=start)
            async with database.transaction() as session:
                await session.execute(insert(Package.__table__), rows)
                await _index(session, rows, database.dialect)
        graph = _package_rows(GRAPH_PACKAGES, "graph-", rng)
        for index, row in enumerate(graph):
            row["name"] = f"graph-{index:03d}"
            row["listed"] = False
        async with database.transaction() as session:
            await session.execute(insert(Package.__table__), graph)
            await session.execute(
                insert(PackageVersion.__table__),
                _graph_versions({row["name"]: row["id"] for row in graph}, rng),
            )
        if database.dialect != "sqlite":
            async with database.engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                await connection.execute(text("VACUUM ANALYZE"))
    finally:
        await database.dispose()


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)

    def at(fraction: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))], 2)

    return {
        "samples": len(ordered),
        "mean_ms": round(statistics.fmean(ordered), 2),
        "p50_ms": at(0.50),
        "p95_ms": at(0.95),
        "p99_ms": at(0.99),
    }


def _measure(server: Server, path: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Anonymous requests (search and resolve need no credentials; an API key would
    also meter every call against the bench customer's plan)."""
    latencies: list[float] = []
    by_body: dict[int, list[float]] = {}
    errors = 0
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        for body in bodies[: min(20, len(bodies))]:  # warm-up
            client.post(path, json=body)
        for index in range(SAMPLES):
            body = bodies[index % len(bodies)]
            started = time.perf_counter()
            response = client.post(path, json=body)
            elapsed = (time.perf_counter() - started) * 1000
            latencies.append(elapsed)
            by_body.setdefault(index % len(bodies), []).append(elapsed)
            if response.status_code != 200:
                errors += 1
    slowest = sorted(
        ((statistics.median(values), json.dumps(bodies[key])) for key, values in by_body.items()),
        reverse=True,
    )[:3]
    return {
        **_percentiles(latencies),
        "errors": errors,
        "slowest_median_ms": {body: round(ms, 2) for ms, body in slowest},
    }


def marketplace_search(server: Server, options: Any) -> dict[str, Any]:
    """POST /api/v1/marketplace/search over 100,000 packages, a mix of queries, filters
    and sorts, one request at a time."""
    asyncio.run(_seed(server))
    figures = _measure(server, "/api/v1/marketplace/search", QUERIES)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        totals = {
            json.dumps(body): client.post("/api/v1/marketplace/search", json=body).json()["total"]
            for body in QUERIES[:4]
        }
    return {
        "latency": figures,
        "packages": SEARCH_PACKAGES,
        "matches": totals,
        "goal": {"p95_ms": "<= 30"},
    }


def marketplace_resolve(server: Server, options: Any) -> dict[str, Any]:
    """POST /api/v1/marketplace/resolve of a layered 200-package graph (three versions
    each, 2-3 dependencies per package), one request at a time."""
    asyncio.run(_seed(server))
    bodies = [{"requirements": [{"name": "graph-000", "spec": "*"}]}]
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        answer = client.post("/api/v1/marketplace/resolve", json=bodies[0])
        answer.raise_for_status()
        resolved = len(answer.json()["packages"])
    figures = _measure(server, "/api/v1/marketplace/resolve", bodies)
    return {
        "latency": figures,
        "graph_packages": GRAPH_PACKAGES,
        "resolved_packages": resolved,
        "goal": {"p95_ms": "<= 100"},
    }
