"""Prometheus metrics. Domains add their own counters here so one module lists them all.

With several ``serve`` workers, ``PROMETHEUS_MULTIPROC_DIR`` is set by ``tollway
serve`` and ``/metrics`` aggregates every worker's files.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

HTTP_REQUESTS = Counter(
    "tollway_http_requests_total",
    "HTTP requests answered, by route template and status.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "tollway_http_request_duration_seconds",
    "Time from request start to the last byte of the answer, by route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CREDITS_MOVED = Counter(
    "tollway_credits_total",
    "Credits moved by committed ledger transfers, by kind (grant, reserve, commit: the "
    "part spent, release, expire, reverse).",
    ["kind"],
)


def render_metrics() -> tuple[bytes, str]:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
