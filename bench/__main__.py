"""``python -m bench [--only NAME ...]``: run the scenarios, write bench/results/*.json."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from bench.scenarios import SCENARIOS, Options
from bench.server import running_server

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="scenarios to run")
    parser.add_argument("--duration", type=int, default=10, help="seconds per load run")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL"),
        help="PostgreSQL URL to bench on instead of a fresh SQLite file",
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL"))
    args = parser.parse_args()
    options = Options(duration_s=args.duration, connections=args.connections)
    chosen = [name for name in SCENARIOS if not args.only or name in args.only]
    backend = "postgresql" if args.database_url else "sqlite"
    RESULTS.mkdir(exist_ok=True)

    with running_server(database_url=args.database_url, redis_url=args.redis_url) as server:
        baseline = SCENARIOS["health"](server, options)["load"]
        print(f"baseline health: {baseline['rps']} req/s, p99 {baseline['p99_ms']} ms")
        for name in chosen:
            figures = baseline if name == "health" else SCENARIOS[name](server, options)
            record: dict[str, Any] = {
                "name": name,
                "backend": backend,
                "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "baseline": baseline,
                **({"load": figures} if name == "health" else figures),
            }
            load = record.get("load")
            if isinstance(load, dict) and name != "health" and baseline["rps"]:
                record["ratio_to_baseline"] = round(load["rps"] / baseline["rps"], 3)
            suffix = "" if backend == "sqlite" else f"-{backend}"
            path = RESULTS / f"{name}{suffix}.json"
            path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"{name}: {json.dumps({k: v for k, v in record.items() if k != 'baseline'})}")


if __name__ == "__main__":
    main()
